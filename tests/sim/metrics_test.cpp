// Metric definitions on hand-made traces (vllm bench serve's rules) and
// the report files.

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <random>

#include <nlohmann/json.hpp>

#include "sim/metrics.hpp"
#include "sim/report.hpp"

namespace mosaic::sim {
namespace {

request_record trace(uint64_t id, double sent, std::vector<double> tokens, int prompt = 100,
                     int image = 0) {
  request_record r;
  r.id = id;
  r.sent_s = r.arrival_s = sent;
  r.token_times_s = tokens;
  r.first_token_s = tokens.front();
  r.end_s = tokens.back();
  r.output_tokens = int(tokens.size());
  r.prompt_tokens = prompt;
  r.image_tokens = image;
  r.ok = true;
  return r;
}

TEST(Metrics, PercentilesInterpolateLikeNumpy) {
  EXPECT_DOUBLE_EQ(percentile({1, 2, 3, 4}, 50), 2.5);
  EXPECT_DOUBLE_EQ(percentile({1, 2, 3, 4}, 90), 3.7);
  EXPECT_DOUBLE_EQ(percentile({5}, 99), 5);
  EXPECT_DOUBLE_EQ(percentile({}, 50), 0);
  EXPECT_DOUBLE_EQ(weighted_percentile({{1, 2}, {2, 1}, {3, 1}}, 50), percentile({1, 1, 2, 3}, 50));
  EXPECT_DOUBLE_EQ(weighted_percentile({{1, 2}, {2, 1}, {3, 1}}, 90), percentile({1, 1, 2, 3}, 90));
}

TEST(Metrics, TtftTpotItlE2eFollowTheDefinitions) {
  // a: sent 0, tokens at 1.0, 1.5, 2.5 → ttft 1, e2e 2.5, tpot 0.75, itl 0.5, 1.0
  // b: sent 1, tokens at 3.0         → ttft 2, e2e 2, no tpot, no itl
  std::vector<request_record> rs{trace(0, 0, {1.0, 1.5, 2.5}, 100, 64), trace(1, 1, {3.0}, 50)};
  auto s = summarize(rs, {});
  EXPECT_EQ(s.completed, 2);
  EXPECT_DOUBLE_EQ(s.ttft.mean, 1.5);
  EXPECT_DOUBLE_EQ(s.ttft.median, 1.5);
  EXPECT_DOUBLE_EQ(s.tpot.mean, 0.75); // only requests with > 1 token
  EXPECT_DOUBLE_EQ(s.itl.mean, 0.75);
  EXPECT_DOUBLE_EQ(s.itl.p90, 0.95);
  EXPECT_DOUBLE_EQ(s.e2e.mean, 2.25);
  EXPECT_DOUBLE_EQ(s.duration_s, 3.0); // first send → last token
  EXPECT_DOUBLE_EQ(s.request_throughput, 2.0 / 3.0);
  EXPECT_DOUBLE_EQ(s.output_token_throughput, 4.0 / 3.0);
  EXPECT_DOUBLE_EQ(s.total_token_throughput, 154.0 / 3.0);
  EXPECT_DOUBLE_EQ(s.image_token_throughput, 64.0 / 3.0);
  EXPECT_DOUBLE_EQ(s.goodput, 0.0); // no SLO given
}

TEST(Metrics, GoodputCountsRequestsMeetingEverySlo) {
  std::vector<request_record> rs{trace(0, 0, {1.0, 1.5, 2.5}), trace(1, 1, {3.0}),
                                 trace(2, 2, {2.2, 2.3, 2.4})};
  rs.push_back(trace(3, 0, {0.5}));
  rs.back().ok = false; // failures never count
  auto s = summarize(rs, {.ttft_s = 1.0, .tpot_s = 0.5}, 4.0);
  EXPECT_EQ(s.failed, 1);
  EXPECT_EQ(s.good, 1); // a: tpot 0.75 > 0.5; b: ttft 2 > 1; c: ttft 0.2, tpot 0.1
  EXPECT_DOUBLE_EQ(s.goodput, 0.25);
}

TEST(Metrics, RandomTracesAgreeWithPerRequestDefinitions) {
  std::mt19937_64 g{std::random_device{}()};
  std::uniform_real_distribution<double> u(0.01, 1.0);
  std::vector<request_record> rs;
  double tpot_sum = 0;
  for (int i = 0; i < 50; ++i) {
    double t = u(g) * 10;
    const double sent = t;
    std::vector<double> times;
    for (int k = 0; k < 2 + i % 7; ++k)
      times.push_back(t += u(g));
    rs.push_back(trace(uint64_t(i), sent, times));
    tpot_sum += (times.back() - times.front()) / double(times.size() - 1);
  }
  auto s = summarize(rs, {});
  EXPECT_NEAR(s.tpot.mean, tpot_sum / 50, 1e-12);
  EXPECT_LE(s.ttft.median, s.ttft.p90);
  EXPECT_LE(s.ttft.p90, s.ttft.p99);
}

TEST(Report, WritesSummaryCsvAndSvgWithUnitsInKeys) {
  const auto dir = std::filesystem::temp_directory_path() /
                   ("mosaic_sim_report_" + std::to_string(std::random_device{}()));
  run_result a{summarize({trace(0, 0, {1.0, 1.5})}, {}), {trace(0, 0, {1.0, 1.5})}};
  a.summary.label = "prefix";
  a.summary.rate = 0.5;
  run_result b = a;
  b.summary.label = "mpic:32";
  ASSERT_TRUE(write_report(dir, {"compare", "gqa", 1, "test", "builtin:tiny", {}}, {a, b}));
  std::ifstream js{dir / "summary.json"};
  auto j = nlohmann::json::parse(js);
  ASSERT_EQ(j["runs"].size(), 2u);
  EXPECT_DOUBLE_EQ(j["runs"][0]["ttft_mean_s"].get<double>(), 1.0);
  EXPECT_TRUE(j["runs"][0].contains("output_token_throughput_tok_per_s"));
  EXPECT_TRUE(j["runs"][0].contains("goodput_req_per_s"));
  std::ifstream csv{dir / "requests.csv"};
  std::string header, line;
  std::getline(csv, header);
  EXPECT_NE(header.find("ttft_s"), std::string::npos);
  int lines = 0;
  while (std::getline(csv, line))
    ++lines;
  EXPECT_EQ(lines, 2);
  std::ifstream svg{dir / "plot.svg"};
  std::string text{std::istreambuf_iterator<char>{svg}, {}};
  EXPECT_NE(text.find("<svg"), std::string::npos);
  EXPECT_NE(text.find("mpic:32"), std::string::npos);
  std::filesystem::remove_all(dir);
}

TEST(Report, RequestsCsvReadsBackAsTheRunsItRecords) {
  const auto dir = std::filesystem::temp_directory_path() /
                   ("mosaic_sim_csv_" + std::to_string(std::random_device{}()));
  std::filesystem::create_directories(dir);
  auto ok = trace(0, 0.25, {1.0, 1.5, 1.75});
  ok.prompt_tokens = 700;
  ok.image_tokens = 576;
  ok.n_images = 1;
  auto failed = trace(1, 2.0, {3.0});
  failed.ok = false;
  failed.first_token_s = failed.end_s = -1;
  failed.output_tokens = 0;
  failed.error = "unavailable: \"no worker\", try again";
  run_result a{summarize({ok, failed}, {}), {ok, failed}};
  a.summary.label = "mpic:32";
  a.summary.rate = 0.5;
  ASSERT_TRUE(write_text(dir / "requests.csv", requests_csv({a})));
  auto runs = read_requests_csv(dir / "requests.csv", {});
  ASSERT_TRUE(runs) << runs.err().to_string();
  ASSERT_EQ(runs->size(), 1u);
  const auto& r = runs->front();
  EXPECT_EQ(r.summary.label, "mpic:32");
  EXPECT_DOUBLE_EQ(r.summary.rate, 0.5);
  ASSERT_EQ(r.records.size(), 2u);
  EXPECT_NEAR(r.records[0].ttft(), ok.ttft(), 1e-9);
  EXPECT_NEAR(r.records[0].e2e(), ok.e2e(), 1e-9);
  EXPECT_EQ(r.records[0].prompt_tokens, 700);
  EXPECT_FALSE(r.records[1].ok);
  EXPECT_EQ(r.records[1].error, failed.error);
  EXPECT_EQ(r.summary.completed, 1);
  EXPECT_EQ(r.summary.failed, 1);
  EXPECT_NEAR(r.summary.ttft.mean, a.summary.ttft.mean, 1e-9);

  // Not a requests.csv, a short line, a bad number: errors that say where.
  auto write = [&](const std::string& text) {
    EXPECT_TRUE(write_text(dir / "bad.csv", text));
    return read_requests_csv(dir / "bad.csv", {});
  };
  EXPECT_FALSE(write("id,ttft\n1,2\n"));
  const std::string header = requests_csv({}).substr(0, requests_csv({}).find('\n') + 1);
  auto short_line = write(header + "full,1,0,0\n");
  ASSERT_FALSE(short_line);
  EXPECT_NE(short_line.err().message.find(":2:"), std::string::npos) << short_line.err().message;
  auto nan = write(header + "full,1,0,0,0,x,0,1,0,1,10,0,1,0,1,\n");
  ASSERT_FALSE(nan);
  EXPECT_NE(nan.err().message.find("arrival_s"), std::string::npos) << nan.err().message;
  auto huge = write(header + "full,1,0,0,0,0,0,1,0,1,1e300,0,1,0,1,\n");
  ASSERT_FALSE(huge);
  EXPECT_NE(huge.err().message.find("prompt_tokens"), std::string::npos) << huge.err().message;
  EXPECT_FALSE(read_requests_csv(dir / "missing.csv", {}));
  std::filesystem::remove_all(dir);
}

} // namespace
} // namespace mosaic::sim
