#include "engine/cpu/cpu_backend.hpp"

#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <limits>
#include <numeric>
#include <vector>

#include "tests/engine/backend_ops_check.hpp"

namespace mosaic {
namespace {

using testing::op_check;
using testing::op_checks;

// -- every op against its reference --------------------------------------------------

class cpu_backend_ops : public ::testing::TestWithParam<op_check> {};

TEST_P(cpu_backend_ops, matches_reference_with_two_threads) {
  auto be = make_cpu_backend(2);
  ASSERT_TRUE(be->supports_op(GetParam().op));
  testing::run_op_check(*be, GetParam());
}

TEST_P(cpu_backend_ops, matches_reference_with_one_thread) {
  auto be = make_cpu_backend(1);
  testing::run_op_check(*be, GetParam());
}

INSTANTIATE_TEST_SUITE_P(all_ops, cpu_backend_ops, ::testing::ValuesIn(op_checks()),
                         [](const auto& info) { return std::string{info.param.name}; });

TEST(cpu_backend, every_op_kind_has_a_check) {
  for (int op = 0; op <= static_cast<int>(op_kind::im2col_patches); ++op) {
    bool found = false;
    for (const auto& check : op_checks())
      found = found || static_cast<int>(check.op) == op;
    EXPECT_TRUE(found) << "op_kind " << op << " has no check in backend_ops_check.hpp";
  }
}

TEST(cpu_backend, is_named_cpu_and_supports_every_op) {
  auto be = make_cpu_backend();
  EXPECT_EQ(be->name(), "cpu");
  for (const auto& check : op_checks())
    EXPECT_TRUE(be->supports_op(check.op)) << check.name;
}

// -- memory -------------------------------------------------------------------------

TEST(cpu_backend, allocations_are_64_byte_aligned_and_round_trip) {
  auto be = make_cpu_backend(1);
  for (size_t bytes :
       {size_t{0}, size_t{1}, size_t{63}, size_t{64}, size_t{1000}, size_t{1} << 20}) {
    auto buf = be->allocate(bytes);
    ASSERT_TRUE(buf) << buf.err().to_string();
    EXPECT_EQ(buf->bytes(), bytes);
    ASSERT_FALSE(buf->empty());
    EXPECT_EQ(reinterpret_cast<uintptr_t>(buf->data()) % 64, 0u);
    std::vector<uint8_t> in(bytes);
    std::iota(in.begin(), in.end(), uint8_t{7});
    ASSERT_TRUE(be->upload(buf->data(), in.data(), bytes));
    auto other = be->allocate(bytes);
    ASSERT_TRUE(other);
    ASSERT_TRUE(be->copy(other->data(), buf->data(), bytes));
    ASSERT_TRUE(be->synchronize());
    std::vector<uint8_t> out(bytes, 0);
    ASSERT_TRUE(be->download(out.data(), other->data(), bytes));
    EXPECT_EQ(out, in);
  }
}

TEST(cpu_backend, impossible_allocation_is_an_error_not_a_crash) {
  auto be = make_cpu_backend(1);
  auto buf = be->allocate(size_t{1} << 62);
  ASSERT_FALSE(buf);
  EXPECT_EQ(buf.err().code, errc::out_of_memory);
  auto wrapped = be->allocate(SIZE_MAX - 3);
  ASSERT_FALSE(wrapped);
  EXPECT_EQ(wrapped.err().code, errc::out_of_memory);
}

TEST(cpu_backend, copies_with_a_null_pointer_are_errors) {
  auto be = make_cpu_backend(1);
  auto buf = be->allocate(16);
  ASSERT_TRUE(buf);
  auto st = be->upload(buf->data(), nullptr, 16);
  ASSERT_FALSE(st);
  EXPECT_EQ(st.err().code, errc::invalid_argument);
  EXPECT_FALSE(be->download(nullptr, buf->data(), 16));
  EXPECT_TRUE(be->copy(nullptr, nullptr, 0)); // nothing to move
}

// -- conventions of the CPU backend beyond the interface ------------------------------

TEST(cpu_backend, few_row_matmul_with_beta_zero_never_reads_c) {
  // BLAS semantics: with beta = 0, C is output only (a NaN there must not
  // leak into the product), on the few-row kernel as on OpenBLAS.
  auto be = make_cpu_backend(2);
  for (int m : {1, 3, 24, 40}) {
    const int n = 37, k = 19;
    std::vector<float> a(static_cast<size_t>(m) * k, 0.5f), b(static_cast<size_t>(n) * k, 2.0f);
    std::vector<float> c(static_cast<size_t>(m) * n, std::numeric_limits<float>::quiet_NaN());
    auto da = be->allocate(a.size() * 4), db = be->allocate(b.size() * 4),
         dc = be->allocate(c.size() * 4);
    ASSERT_TRUE(da && db && dc);
    ASSERT_TRUE(be->upload(da->data(), a.data(), a.size() * 4));
    ASSERT_TRUE(be->upload(db->data(), b.data(), b.size() * 4));
    ASSERT_TRUE(be->upload(dc->data(), c.data(), c.size() * 4));
    be->matmul(da->f32(), db->f32(), dc->f32(), m, n, k, true);
    ASSERT_TRUE(be->download(c.data(), dc->data(), c.size() * 4));
    for (float v : c)
      ASSERT_EQ(v, 0.5f * 2.0f * k) << "m=" << m;
  }
}

TEST(cpu_backend, causal_attention_without_positions_puts_queries_last) {
  // nq queries over nk keys with no positions: query i sits at nk - nq + i.
  auto be = make_cpu_backend(2);
  std::mt19937 rng{std::random_device{}()};
  const int nk = 9;
  const int nq = 4;
  const int hd = 8;
  auto q = testing::random_vec(rng, static_cast<size_t>(nq) * hd);
  auto k = testing::random_vec(rng, static_cast<size_t>(nk) * hd);
  auto v = testing::random_vec(rng, static_cast<size_t>(nk) * hd);
  std::vector<float> out(q.size());
  std::vector<int32_t> q_pos{5, 6, 7, 8};
  std::vector<int32_t> k_pos(nk);
  std::iota(k_pos.begin(), k_pos.end(), 0);
  attention_args args;
  args.q = q.data();
  args.k = k.data();
  args.v = v.data();
  args.out = out.data();
  args.nq = nq;
  args.nk = nk;
  args.n_heads = 1;
  args.n_kv_heads = 1;
  args.head_dim = hd;
  args.scale = 0.5f;
  be->attention(args);
  args.q_pos = q_pos.data();
  args.k_pos = k_pos.data();
  testing::expect_close(out, testing::ref::attention(args), testing::gemm_tolerance,
                        "attention without positions");
}

} // namespace
} // namespace mosaic
