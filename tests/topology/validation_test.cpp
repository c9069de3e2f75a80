// Every class of mistake in a topology file is reported at its
// FILE:LINE:COLUMN with a message and a fix, and all of them at once.

#include <gtest/gtest.h>

#include "tests/topology/topology_test_util.hpp"

namespace mosaic {
namespace {

using testing::check_yaml;
using testing::dump;

TEST(topology_validation, unknown_keys_suggest_the_closest_known_key) {
  auto report = check_yaml(R"(model: builtin:tiny
nodes:
  - name: local
    host: 127.0.0.1
    contrl_port: 7400
    actors:
      - { kind: frontend, htp_port: 8000 }
      - { kind: encoder, cache: 64 }
      - { kind: kv_loader, library: lib, zzzz: 1 }
      - { kind: linker }
      - { kind: prefill }
      - { kind: decode }
)");
  EXPECT_FALSE(report.ok());
  EXPECT_DIAG(report, 5, 5, "unknown key 'contrl_port' in node 'local'",
              "did you mean 'control_port'?");
  EXPECT_DIAG(report, 7, 27, "unknown key 'htp_port' in frontend actor",
              "did you mean 'http_port'?");
  EXPECT_DIAG(report, 8, 26, "unknown key 'cache'", "did you mean 'cache_mb'?");
  // No close match: the hint lists what the actor accepts.
  EXPECT_DIAG(report, 9, 42, "unknown key 'zzzz'", "expected one of: ");
  EXPECT_DIAG(report, 9, 42, "unknown key 'zzzz'", "ram_gb");
  EXPECT_EQ(report.diagnostics.size(), 4u) << dump(report);
  // The printed form is FILE:LINE:COLUMN: message, then the fix.
  auto text = report.to_string();
  EXPECT_NE(text.find("t.yaml:7:27: unknown key 'htp_port' in frontend actor #1 of node "
                      "'local'\n  fix: did you mean 'http_port'?\n"),
            std::string::npos)
      << text;
}

TEST(topology_validation, unknown_actor_kind_suggests_a_kind) {
  auto report = check_yaml(R"(model: builtin:tiny
nodes:
  - name: local
    host: 127.0.0.1
    actors:
      - { kind: prefil }
)");
  EXPECT_DIAG(report, 6, 17, "unknown kind 'prefil'", "did you mean 'prefill'?");
  // Missing roles are not reported on top of an unreadable kind.
  EXPECT_EQ(report.diagnostics.size(), 1u) << dump(report);
}

TEST(topology_validation, wrong_types_are_named) {
  auto report = check_yaml(R"(model: builtin:tiny
nodes:
  - name: local
    host: [127.0.0.1]
    control_port: "7400"
    data_port: seven
    threads: 1.5
    devices: cpu
    actors:
      - { kind: frontend, http_port: { port: 8000 } }
      - { kind: encoder }
      - { kind: kv_loader, library: lib, ram_gb: lots }
      - { kind: linker }
      - { kind: prefill }
      - { kind: decode, pool_gb: }
)");
  EXPECT_DIAG(report, 4, 11, "'host' must be a string, got a list", "");
  EXPECT_DIAG(report, 5, 19, "'control_port' must be an integer, got the quoted string '7400'",
              "remove the quotes");
  EXPECT_DIAG(report, 6, 16, "'data_port' must be an integer, got 'seven'", "1 to 65535");
  EXPECT_DIAG(report, 7, 14, "'threads' must be an integer, got '1.5'", "");
  EXPECT_DIAG(report, 8, 14, "'devices' of node 'local' must be a list", "devices: [cpu]");
  EXPECT_DIAG(report, 10, 38, "'http_port' must be an integer, got a map", "");
  EXPECT_DIAG(report, 12, 50, "'ram_gb' must be a number, got 'lots'", "");
  EXPECT_DIAG(report, 15, 25, "'pool_gb' has no value", "");
  EXPECT_EQ(report.diagnostics.size(), 8u) << dump(report);
}

TEST(topology_validation, missing_required_keys_are_reported_where_the_map_starts) {
  auto report = check_yaml(R"(nodes:
  - name: local
    actors:
      - { kind: frontend }
      - { kind: encoder }
      - { kind: kv_loader }
      - { kind: linker }
      - { kind: prefill }
      - { kind: decode }
  - host: 127.0.0.2
    actors: [ { kind: decode } ]
)");
  EXPECT_DIAG(report, 1, 1, "the topology is missing the required key 'model'",
              "model: builtin:small");
  EXPECT_DIAG(report, 2, 5, "node 'local' is missing the required key 'host'", "host: ");
  EXPECT_DIAG(report, 6, 9,
              "kv_loader actor #3 of node 'local' is missing the required key "
              "'library'",
              "library: ");
  EXPECT_DIAG(report, 10, 5, "node #2 is missing the required key 'name'", "name: ");
  EXPECT_EQ(report.diagnostics.size(), 4u) << dump(report);
}

TEST(topology_validation, out_of_range_values_name_the_allowed_range) {
  auto report = check_yaml(R"(model: builtin:tiny
defaults: { deadline_ms: 0 }
nodes:
  - name: local
    host: 127.0.0.1
    control_port: 0
    data_port: 65536
    actors:
      - { kind: frontend, http_port: 99999999999999999999999 }
      - { kind: encoder, cache_mb: 0 }
      - { kind: kv_loader, library: lib, disk_gb: -5 }
      - { kind: linker }
      - { kind: prefill, max_tokens: -1, compression: "snapkv:img=1.5" }
      - { kind: decode, max_batch: 100000, block_size: 24 }
)");
  EXPECT_DIAG(report, 2, 26, "'deadline_ms' = 0 is out of range", "from 1 to 86400000");
  EXPECT_DIAG(report, 6, 19, "'control_port' = 0 is out of range", "from 1 to 65535");
  EXPECT_DIAG(report, 7, 16, "'data_port' = 65536 is out of range", "from 1 to 65535");
  EXPECT_DIAG(report, 9, 38, "'http_port' = '99999999999999999999999' is out of range",
              "from 1 to 65535");
  EXPECT_DIAG(report, 10, 36, "'cache_mb' = 0 is out of range", "");
  EXPECT_DIAG(report, 11, 51, "'disk_gb' = -5 is out of range", "greater than 0");
  EXPECT_DIAG(report, 13, 38, "'max_tokens' = -1 is out of range", "from 0");
  EXPECT_DIAG(report, 13, 55,
              "bad 'compression' of prefill actor #5 of node 'local': bad compression option "
              "\"img=1.5\"",
              "snapkv:img=0.25,txt=0.5");
  EXPECT_DIAG(report, 14, 36, "'max_batch' = 100000 is out of range", "from 1 to 4096");
  EXPECT_DIAG(report, 14, 56, "'block_size' = 24 is not a power of two", "16");
  EXPECT_EQ(report.diagnostics.size(), 10u) << dump(report);
}

TEST(topology_validation, prefill_chunking_and_prefix_cache_are_checked) {
  auto report = check_yaml(R"(model: builtin:tiny
nodes:
  - name: local
    host: 127.0.0.1
    actors:
      - { kind: prefill, chunk_tokens: 8, prefix_cache: maybe }
)");
  EXPECT_DIAG(report, 6, 40, "'chunk_tokens' = 8 is out of range", "from 16");
  EXPECT_DIAG(report, 6, 57, "unknown prefix_cache 'maybe'", "on");
  auto ok = check_yaml(R"(model: builtin:tiny
nodes:
  - name: local
    host: 127.0.0.1
    actors:
      - { kind: prefill, chunk_tokens: 512, prefix_cache: off, max_tokens: 0 }
)");
  for (const auto& d : ok.diagnostics)
    EXPECT_EQ(d.message.find("prefill"), std::string::npos) << dump(ok);
}

TEST(topology_validation, store_after_use_takes_first_repeat_or_off) {
  auto report = check_yaml(R"(model: builtin:tiny
nodes:
  - name: local
    host: 127.0.0.1
    actors:
      - { kind: prefill, store_after_use: always }
)");
  EXPECT_DIAG(report, 6, 43, "unknown store_after_use 'always'", "first");
  for (const char* choice : {"first", "repeat", "off"}) {
    auto ok = check_yaml(std::string{R"(model: builtin:tiny
nodes:
  - name: local
    host: 127.0.0.1
    actors:
      - { kind: prefill, store_after_use: )"} +
                         choice + " }\n");
    for (const auto& d : ok.diagnostics)
      EXPECT_EQ(d.message.find("store_after_use"), std::string::npos) << dump(ok);
  }
}

TEST(topology_validation, values_that_cannot_work_are_rejected_with_a_position) {
  auto report = check_yaml(R"(model: builtin:tiny
nodes:
  - name: a
    host: 999.1.1.1
  - name: b
    host: a..b
  - name: c
    host: 127.0.0.1
    control_port: 7000
    actors:
      - { kind: decode, pool_gb: 1e-320 }
      - { kind: kv_loader, library: lib, ram_gb: 1e-9 }
  - name: d
    host: 127.1
    control_port: 7000
)");
  EXPECT_DIAG(report, 4, 11, "host '999.1.1.1'", "host: 10.0.0.5");
  EXPECT_DIAG(report, 6, 11, "host 'a..b'", "host: 10.0.0.5");
  EXPECT_DIAG(report, 11, 34, "'pool_gb' = ", "1 MiB");
  EXPECT_DIAG(report, 12, 50, "'ram_gb' = 1e-09", "1 MiB");
  bool loopback_duplicate = false;
  for (const auto& d : report.diagnostics)
    loopback_duplicate =
        loopback_duplicate || (d.message.find("7000") != std::string::npos && d.line == 15);
  EXPECT_TRUE(loopback_duplicate) << dump(report);
}

TEST(topology_validation, curve_keys_are_checked_and_given_to_every_node_or_none) {
  auto report = check_yaml(R"(model: builtin:tiny
nodes:
  - name: a
    host: 10.0.0.1
    public_key: "not a key"
  - name: b
    host: 10.0.0.2
    public_key: "rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7"
  - name: c
    host: 10.0.0.3
    key_file: /etc/hostname
)");
  EXPECT_DIAG(report, 5, 17, "public_key of node 'a' is not a CURVE public key", "mosaic keys");
  EXPECT_DIAG(report, 9, 5, "node 'c' has no public_key, but other nodes of the cluster do",
              "mosaic keys");
  EXPECT_DIAG(report, 9, 5, "node 'c' names a key_file but no public_key", "public_key");
}

TEST(topology_validation, control_plane_tls_needs_a_ca_and_every_node_certified) {
  // Certificates without a CA, and a node without its key.
  auto report = check_yaml(R"(model: builtin:tiny
nodes:
  - name: a
    host: 10.0.0.1
    tls_cert: /etc/hostname
    tls_key: /etc/hostname
  - name: b
    host: 10.0.0.2
    tls_cert: /etc/hostname
)");
  EXPECT_DIAG(report, 3, 3, "nodes have tls_cert/tls_key but the topology has no tls_ca", "tls_ca");
  EXPECT_DIAG(report, 7, 5, "node 'b' lacks tls_key, but the cluster's control plane uses TLS",
              "signed by tls_ca");
  // A CA and a node without any certificate.
  auto bare = check_yaml(R"(model: builtin:tiny
tls_ca: /etc/hostname
nodes:
  - name: a
    host: 10.0.0.1
)");
  EXPECT_DIAG(bare, 4, 5, "node 'a' lacks tls_cert and tls_key", "tls_ca");
}

TEST(topology_validation, duplicate_node_names_and_duplicate_keys) {
  auto report = check_yaml(R"(model: builtin:tiny
nodes:
  - name: a
    host: 10.0.0.1
    actors: [ { kind: frontend }, { kind: encoder }, { kind: kv_loader, library: l } ]
  - name: a
    host: 10.0.0.2
    host: 10.0.0.3
    actors: [ { kind: linker }, { kind: prefill }, { kind: decode, max_batch: 1, max_batch: 2 } ]
)");
  EXPECT_DIAG(report, 6, 5, "duplicate node name 'a' (first used at line 3)", "unique name");
  EXPECT_DIAG(report, 8, 5, "duplicate key 'host' in node #2 (first set at line 7)",
              "keep only one");
  EXPECT_DIAG(report, 9, 82,
              "duplicate key 'max_batch' in actor #3 of node 'a' (first set at line 9)",
              "keep only one");
  EXPECT_EQ(report.diagnostics.size(), 3u) << dump(report);
}

TEST(topology_validation, ports_must_differ_between_nodes_sharing_a_host) {
  auto report = check_yaml(R"(model: builtin:tiny
nodes:
  - name: a
    host: 127.0.0.1
    actors:
      - { kind: frontend, http_port: 7501, zmq_port: 9000 }
      - { kind: encoder }
      - { kind: kv_loader, library: lib }
  - name: b
    host: localhost
    data_port: 7501
    actors:
      - { kind: linker }
      - { kind: prefill }
      - { kind: decode }
  - name: c
    host: 10.0.0.9
    actors:
      - { kind: frontend, http_port: 9000, zmq_port: 9000 }
)");
  // b's default control_port 7400 collides with a's (reported at node b).
  EXPECT_DIAG(report, 9, 5,
              "port 7400 (control_port of node 'b') is already used by "
              "control_port of node 'a' on host 127.0.0.1 (line 3)",
              "its own number");
  // localhost is 127.0.0.1: b's data_port collides with a's http_port.
  EXPECT_DIAG(report, 11, 16,
              "port 7501 (data_port of node 'b') is already used by http_port "
              "of frontend actor #1 of node 'a'",
              "its own number");
  // Same port on another host is fine; twice on one host is not.
  EXPECT_DIAG(report, 19, 54, "port 9000 (zmq_port of frontend actor #1 of node 'c')",
              "its own number");
  EXPECT_EQ(report.diagnostics.size(), 3u) << dump(report);
}

TEST(topology_validation, actor_devices_must_be_listed_by_their_node) {
  auto report = check_yaml(R"(model: builtin:tiny
nodes:
  - name: gpu
    host: 127.0.0.1
    devices: [cuda:0, cuda:1]
    actors:
      - { kind: frontend }
      - { kind: encoder, device: cpu }
      - { kind: kv_loader, library: lib }
      - { kind: linker }
      - { kind: prefill, device: cuda:2 }
      - { kind: decode, device: gpu:1 }
  - name: bad
    host: 127.0.0.2
    devices: [cpu, cuda:01, cpu]
    actors: [ { kind: prefill, device: cuda:5 } ]
)");
  EXPECT_DIAG(report, 8, 34,
              "uses device cpu, which is not in the node's devices "
              "[cuda:0, cuda:1]",
              "add cpu to the `devices:` list of node 'gpu'");
  EXPECT_DIAG(report, 11, 34, "uses device cuda:2", "");
  EXPECT_DIAG(report, 12, 33, "unknown device 'gpu:1'", "cuda:N");
  EXPECT_DIAG(report, 15, 20, "unknown device 'cuda:01'", "");
  EXPECT_DIAG(report, 15, 29, "device cpu is listed twice", "once");
  // The node's own list was wrong, so membership is not checked there.
  EXPECT_EQ(report.diagnostics.size(), 5u) << dump(report);
}

TEST(topology_validation, policies_are_checked_with_the_shared_grammar) {
  auto report = check_yaml(R"(model: builtin:tiny
defaults: { policy: "cacheblend:2" }
nodes:
  - name: local
    host: 127.0.0.1
    actors:
      - { kind: frontend }
      - { kind: encoder }
      - { kind: kv_loader, library: lib }
      - { kind: linker, policy: "mpic:0" }
      - { kind: prefill }
      - { kind: decode }
)");
  // The message is parse_policy's own, so every front end reads the same.
  auto expected = parse_policy("mpic:0");
  ASSERT_FALSE(expected);
  // The value is reported where its quote opens.
  EXPECT_DIAG(report, 10, 33, expected.err().message, "mpic:32");
  EXPECT_DIAG(report, 2, 21, parse_policy("cacheblend:2").err().message, "");
  EXPECT_EQ(report.diagnostics.size(), 2u) << dump(report);
}

TEST(topology_validation, every_required_role_must_exist_somewhere) {
  auto report = check_yaml(R"(model: builtin:tiny
nodes:
  - name: local
    host: 127.0.0.1
    actors:
      - { kind: frontend }
      - { kind: router }
      - { kind: prefill }
)");
  for (const char* role : {"encoder", "kv_loader", "linker", "decode"})
    EXPECT_DIAG(report, 3, 3, std::string{"the cluster has no "} + role + " actor",
                std::string{"kind: "} + role);
  EXPECT_EQ(report.diagnostics.size(), 4u) << dump(report);
}

TEST(topology_validation, malformed_yaml_is_reported_at_its_position) {
  auto report = check_yaml("model: builtin:tiny\nnodes: [ { name: a, host: x\n");
  ASSERT_EQ(report.diagnostics.size(), 1u) << dump(report);
  const auto& d = report.diagnostics[0];
  EXPECT_EQ(d.file.substr(d.file.size() - 6), "t.yaml");
  EXPECT_GE(d.line, 2);
  EXPECT_GE(d.column, 1);
  EXPECT_NE(d.message.find("malformed YAML"), std::string::npos) << d.message;

  auto tabs = check_yaml("model: builtin:tiny\nnodes:\n\t- name: a\n");
  ASSERT_EQ(tabs.diagnostics.size(), 1u) << dump(tabs);
  EXPECT_EQ(tabs.diagnostics[0].line, 3);
  EXPECT_NE(tabs.diagnostics[0].hint.find("tabs"), std::string::npos);
}

TEST(topology_validation, other_cross_checks) {
  auto report = check_yaml(R"(model: builtin:huge
compression: { image_ratio: 0.5 }
nodes:
  - name: "has space"
    host: "bad host"
    actors: []
  - not a map
)");
  EXPECT_DIAG(report, 1, 8, "unknown built-in model 'builtin:huge'", "builtin:tiny");
  EXPECT_DIAG(report, 2, 14, "'compression' is a key of the prefill actor, not of the topology",
              "kind: prefill, compression:");
  EXPECT_DIAG(report, 4, 11, "node name 'has space' is not valid", "letters, digits");
  EXPECT_DIAG(report, 5, 11, "host 'bad host' of node #1 is not a host name", "host: ");
  EXPECT_DIAG(report, 6, 13, "'actors' of node #1 must be a list of 1 to 1024 actors, got 0",
              "remove the node");
  EXPECT_DIAG(report, 7, 5, "node #2 must be a map, got a string", "- name:");
  EXPECT_EQ(report.diagnostics.size(), 6u) << dump(report);
}

TEST(topology_validation, all_errors_are_collected_in_file_order) {
  auto report = check_yaml(R"(model: builtin:tiny
nodes:
  - name: local
    host: 127.0.0.1
    actors:
      - { kind: frontend, http_port: 0 }
      - { kind: encoder, device: cuda:0 }
      - { kind: kv_loader, library: lib, io: mmap }
      - { kind: linker, policy: best }
      - { kind: prefill, speed: 11 }
      - { kind: decode, block_size: 3 }
)");
  ASSERT_EQ(report.diagnostics.size(), 6u) << dump(report);
  for (size_t i = 0; i < report.diagnostics.size(); ++i)
    EXPECT_EQ(report.diagnostics[i].line, static_cast<int>(i) + 6) << dump(report);
  EXPECT_FALSE(report.value.has_value());
}

} // namespace
} // namespace mosaic
