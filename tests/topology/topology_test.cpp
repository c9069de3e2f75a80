// The shipped example topologies parse, and valid files become the structs
// (and defaults) that docs/topology.md promises.

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>

#include "tests/topology/topology_test_util.hpp"

namespace mosaic {
namespace {

using testing::check_yaml;
using testing::dump;
using testing::minimal_topology;
using testing::temp_dir;

namespace fs = std::filesystem;

std::string example(const char* name) {
  return (fs::path{MOSAIC_TOPOLOGY_EXAMPLES} / name).string();
}

TEST(topology_examples, every_file_in_deploy_topologies_is_valid) {
  size_t files = 0;
  for (const auto& entry : fs::directory_iterator{MOSAIC_TOPOLOGY_EXAMPLES}) {
    if (entry.path().extension() != ".yaml")
      continue;
    ++files;
    auto report = check_topology_file(entry.path().string());
    EXPECT_TRUE(report.ok()) << dump(report);
    if (report.ok()) {
      EXPECT_EQ(report.to_string().rfind(entry.path().string() + ": ok (", 0), 0u);
    }
  }
  EXPECT_GE(files, 3u);
}

TEST(topology_examples, single_cpu_runs_every_role_in_one_process_on_the_cpu) {
  auto topo = load_topology(example("single-cpu.yaml"));
  ASSERT_TRUE(topo) << topo.err().message;
  EXPECT_EQ(topo->model, "builtin:small");
  ASSERT_EQ(topo->nodes.size(), 1u);
  const auto& node = topo->nodes[0];
  EXPECT_EQ(node.host, "127.0.0.1");
  EXPECT_EQ(node.control_port, 7400);
  EXPECT_EQ(node.data_port, 7500);
  EXPECT_EQ(node.devices, std::vector<device_spec>{device_spec{}});
  for (auto kind :
       {actor_kind::frontend, actor_kind::router, actor_kind::encoder, actor_kind::kv_loader,
        actor_kind::linker, actor_kind::prefill, actor_kind::decode})
    EXPECT_EQ(node.count(kind), 1u) << to_string(kind);
  for (const auto& actor : node.actors) {
    if (const auto* f = actor.get<frontend_spec>()) {
      EXPECT_EQ(f->http_port, 8000);
      EXPECT_EQ(f->zmq_port, 8001);
    }
    if (const auto* l = actor.get<linker_spec>()) {
      EXPECT_EQ(l->policy.to_string(), "mpic:32");
    }
  }
}

TEST(topology_examples, three_process_puts_three_nodes_on_loopback_with_distinct_ports) {
  auto topo = load_topology(example("three-process.yaml"));
  ASSERT_TRUE(topo) << topo.err().message;
  ASSERT_EQ(topo->nodes.size(), 3u);
  std::vector<int> ports;
  for (const auto& n : topo->nodes) {
    EXPECT_EQ(n.host, "127.0.0.1");
    ports.push_back(n.control_port);
    ports.push_back(n.data_port);
  }
  std::sort(ports.begin(), ports.end());
  EXPECT_EQ(std::adjacent_find(ports.begin(), ports.end()), ports.end());
  EXPECT_EQ(topo->find_node("decode")->count(actor_kind::decode), 1u);
  EXPECT_EQ(topo->find_node("front")->count(actor_kind::frontend), 1u);
}

TEST(topology_examples, two_nodes_spread_prefill_and_decode_over_eight_gpus_each) {
  auto topo = load_topology(example("two-nodes-8gpu.yaml"));
  ASSERT_TRUE(topo) << topo.err().message;
  ASSERT_EQ(topo->nodes.size(), 2u);
  for (const auto& n : topo->nodes) {
    ASSERT_EQ(n.devices.size(), 8u);
    for (int i = 0; i < 8; ++i)
      EXPECT_EQ(n.devices[i].to_string(), "cuda:" + std::to_string(i));
    EXPECT_GE(n.count(actor_kind::prefill), 2u);
    EXPECT_GE(n.count(actor_kind::decode), 2u);
  }
  EXPECT_GE(topo->count(actor_kind::prefill), 4u);
  EXPECT_GE(topo->count(actor_kind::decode), 4u);
}

TEST(topology_values, omitted_keys_take_the_documented_defaults) {
  auto topo = parse_topology(minimal_topology, "minimal");
  ASSERT_TRUE(topo) << topo.err().message;
  EXPECT_EQ(topo->source, "minimal");
  EXPECT_TRUE(topo->api_keys.empty());
  EXPECT_EQ(topo->defaults.policy.to_string(), "mpic:32");
  EXPECT_EQ(topo->defaults.deadline_ms, 30000);
  const auto& node = topo->nodes.at(0);
  EXPECT_EQ(node.control_port, 7400);
  EXPECT_EQ(node.data_port, 7500);
  EXPECT_EQ(node.threads, 0);
  ASSERT_EQ(node.actors.size(), 6u);
  const auto* front = node.actors[0].get<frontend_spec>();
  ASSERT_NE(front, nullptr);
  EXPECT_EQ(front->http_port, 8000);
  EXPECT_EQ(front->zmq_port, 8001);
  EXPECT_EQ(front->bind, "127.0.0.1");
  EXPECT_EQ(front->max_body_bytes(), 32u << 20);
  const auto* loader = node.actors[2].get<kv_loader_spec>();
  ASSERT_NE(loader, nullptr);
  EXPECT_EQ(loader->storage, kv_storage_dtype::f16);
  EXPECT_EQ(loader->io, kv_io_engine::uring);
  EXPECT_EQ(loader->ram_bytes(), uint64_t{4} << 30);
  const auto* decode = node.actors[5].get<decode_spec>();
  ASSERT_NE(decode, nullptr);
  EXPECT_EQ(decode->device, device_spec{});
  EXPECT_EQ(decode->block_size, 16);
  EXPECT_EQ(decode->max_batch, 64);
  // Positions let later start-up errors point into the file.
  EXPECT_EQ(node.origin.line, 3);
  EXPECT_EQ(node.actors[5].origin.line, 11);
  EXPECT_EQ(node.actors[5].kind(), actor_kind::decode);
}

TEST(topology_values, linkers_inherit_the_default_policy_and_may_override_it) {
  std::string yaml{minimal_topology};
  yaml.insert(yaml.find("nodes:"), "defaults: { policy: \"vlcache:0.05\", deadline_ms: 500 }\n");
  yaml += "      - { kind: linker, policy: full }\n";
  auto topo = parse_topology(yaml, "t");
  ASSERT_TRUE(topo) << topo.err().message;
  EXPECT_EQ(topo->defaults.deadline_ms, 500);
  std::vector<std::string> policies;
  for (const auto& a : topo->nodes[0].actors)
    if (const auto* l = a.get<linker_spec>())
      policies.push_back(l->policy.to_string());
  EXPECT_EQ(policies, (std::vector<std::string>{"vlcache:0.05", "full"}));
}

TEST(topology_values, actor_devices_default_to_the_nodes_first_device) {
  std::string yaml{minimal_topology};
  yaml.insert(yaml.find("    actors:"), "    devices: [cuda:3, cpu]\n");
  yaml += "      - { kind: decode, device: cpu, block_size: 32, pool_gb: 0.5 }\n";
  auto topo = parse_topology(yaml, "t");
  ASSERT_TRUE(topo) << topo.err().message;
  const auto& actors = topo->nodes[0].actors;
  EXPECT_EQ(actors[5].get<decode_spec>()->device.to_string(), "cuda:3");
  EXPECT_EQ(actors[6].get<decode_spec>()->device.to_string(), "cpu");
  EXPECT_EQ(actors[6].get<decode_spec>()->pool_bytes(), uint64_t{1} << 29);
}

TEST(topology_values, prefill_compression_is_read_and_off_by_default) {
  auto plain = parse_topology(minimal_topology, "t");
  ASSERT_TRUE(plain) << plain.err().message;
  for (const auto& a : plain->nodes.at(0).actors) {
    if (const auto* p = a.get<prefill_spec>()) {
      EXPECT_FALSE(p->compression.enabled());
    }
  }
  std::string yaml{minimal_topology};
  const auto at = yaml.find("kind: prefill");
  ASSERT_NE(at, std::string::npos);
  yaml.insert(at + std::string_view{"kind: prefill"}.size(),
              ", compression: \"snapkv:img=0.25,txt=0.9\"");
  auto topo = parse_topology(yaml, "t");
  ASSERT_TRUE(topo) << topo.err().message;
  const prefill_spec* p = nullptr;
  for (const auto& a : topo->nodes.at(0).actors)
    if (a.get<prefill_spec>() != nullptr)
      p = a.get<prefill_spec>();
  ASSERT_NE(p, nullptr);
  EXPECT_EQ(p->compression.method, compression_method::snapkv);
  EXPECT_FLOAT_EQ(p->compression.image_ratio, 0.25f);
  EXPECT_FLOAT_EQ(p->compression.text_ratio, 0.9f);
}

TEST(topology_paths, relative_paths_resolve_against_the_files_directory) {
  temp_dir dir;
  std::string yaml{minimal_topology};
  yaml.replace(yaml.find("builtin:tiny"), 12, "models/llava");
  yaml += "api_keys: keys.txt\n";
  auto file = dir.write("cluster.yaml", yaml);
  auto topo = load_topology(file);
  ASSERT_TRUE(topo) << topo.err().message;
  EXPECT_EQ(topo->model, (dir.path() / "models/llava").string());
  EXPECT_EQ(topo->api_keys, (dir.path() / "keys.txt").string());
  EXPECT_EQ(topo->nodes[0].actors[2].get<kv_loader_spec>()->library, (dir.path() / "lib").string());
  // Text without a base directory keeps relative paths as written.
  auto text = parse_topology(yaml, "t");
  ASSERT_TRUE(text);
  EXPECT_EQ(text->api_keys, "keys.txt");
}

TEST(topology_paths, tilde_expands_to_home) {
  const char* home = std::getenv("HOME");
  if (home == nullptr || *home == '\0')
    GTEST_SKIP() << "HOME is not set";
  std::string yaml{minimal_topology};
  yaml.replace(yaml.find("library: lib"), 12, "library: ~/mosaic/lib");
  auto topo = parse_topology(yaml, "t");
  ASSERT_TRUE(topo) << topo.err().message;
  EXPECT_EQ(topo->nodes[0].actors[2].get<kv_loader_spec>()->library,
            (fs::path{home} / "mosaic/lib").lexically_normal().string());
}

TEST(topology_paths, check_files_reports_a_missing_api_key_file_and_model_directory) {
  temp_dir dir;
  std::string yaml{minimal_topology};
  yaml.replace(yaml.find("builtin:tiny"), 12, "no-such-model");
  yaml += "api_keys: keys.txt\n";
  auto file = dir.write("cluster.yaml", yaml);
  topology_options opts;
  EXPECT_TRUE(check_topology_file(file, opts).ok()) << "files are not checked by default";
  opts.check_files = true;
  auto report = check_topology_file(file, opts);
  EXPECT_FALSE(report.ok());
  EXPECT_DIAG(report, 1, 8, "not a directory", "fix the path");
  EXPECT_DIAG(report, 12, 11, "keys.txt", "fix the path");
  dir.write("keys.txt", "sk-test tenant-a\n");
  fs::create_directories(dir.path() / "no-such-model");
  EXPECT_TRUE(check_topology_file(file, opts).ok()) << dump(check_topology_file(file, opts));
}

TEST(topology_api, result_functions_carry_every_diagnostic_and_the_right_code) {
  auto missing = load_topology("/nonexistent/mosaic/topology.yaml");
  ASSERT_FALSE(missing);
  EXPECT_EQ(missing.err().code, errc::not_found);
  EXPECT_NE(missing.err().message.find("/nonexistent/mosaic/topology.yaml: cannot open"),
            std::string::npos);

  auto bad = parse_topology("model: builtin:tiny\nnodez: []\nfoo: 1\n", "bad.yaml");
  ASSERT_FALSE(bad);
  EXPECT_EQ(bad.err().code, errc::invalid_argument);
  const auto& msg = bad.err().message;
  EXPECT_NE(msg.find("bad.yaml:2:1: unknown key 'nodez' in the topology\n  fix: did you mean "
                     "'nodes'?"),
            std::string::npos)
      << msg;
  EXPECT_NE(msg.find("bad.yaml:3:1: unknown key 'foo'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("bad.yaml:1:1: the topology is missing the required key 'nodes'"),
            std::string::npos)
      << msg;
}

} // namespace
} // namespace mosaic
