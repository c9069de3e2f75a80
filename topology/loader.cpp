// Entry points: file → text → YAML → topology, turning every failure on
// the way (unreadable file, binary data, yaml-cpp exceptions) into
// diagnostics. No exception leaves this file.

#include "topology/loader.hpp"

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <new>
#include <sstream>

#include <yaml-cpp/eventhandler.h>

#include "topology/parse_context.hpp"

namespace mosaic {

namespace {

using topology_detail::diagnostic_sink;
namespace fs = std::filesystem;

/// Offset of the first byte that is not UTF-8 text (NUL, control bytes
/// other than tab/newline, malformed sequences), or npos.
size_t first_non_text(std::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    auto c = static_cast<unsigned char>(s[i]);
    if (c < 0x80) {
      if ((c < 0x20 && c != '\t' && c != '\n' && c != '\r') || c == 0x7f)
        return i;
      ++i;
      continue;
    }
    size_t len = (c >> 5) == 0x6 ? 2 : (c >> 4) == 0xe ? 3 : (c >> 3) == 0x1e ? 4 : 0;
    if (len == 0 || c == 0xc0 || c == 0xc1 || c > 0xf4 || i + len > s.size())
      return i;
    for (size_t k = 1; k < len; ++k)
      if ((static_cast<unsigned char>(s[i + k]) & 0xc0) != 0x80)
        return i;
    i += len;
  }
  return std::string_view::npos;
}

spec_origin origin_of_offset(std::string_view s, size_t offset) {
  spec_origin at{1, 1};
  for (size_t i = 0; i < offset; ++i) {
    if (s[i] == '\n') {
      ++at.line;
      at.column = 1;
    } else {
      ++at.column;
    }
  }
  return at;
}

/// Records where each document starts; ignores everything else.
class document_starts : public YAML::EventHandler {
public:
  std::vector<YAML::Mark> marks;

  void OnDocumentStart(const YAML::Mark& mark) override { marks.push_back(mark); }
  void OnDocumentEnd() override {}
  void OnNull(const YAML::Mark&, YAML::anchor_t) override {}
  void OnAlias(const YAML::Mark&, YAML::anchor_t) override {}
  void OnScalar(const YAML::Mark&, const std::string&, YAML::anchor_t,
                const std::string&) override {}
  void OnSequenceStart(const YAML::Mark&, const std::string&, YAML::anchor_t,
                       YAML::EmitterStyle::value) override {}
  void OnSequenceEnd() override {}
  void OnMapStart(const YAML::Mark&, const std::string&, YAML::anchor_t,
                  YAML::EmitterStyle::value) override {}
  void OnMapEnd() override {}
};

/// Checks that `text` holds at most one YAML document, with a bounded
/// number of parser steps. yaml-cpp 0.7's LoadAll never returns on some
/// malformed input (a stray ',' at block level: yaml-cpp issue #1040, fixed
/// upstream by PR #1319) and grows memory until the OOM killer steps in;
/// there the parser keeps "starting" documents at the same position, which
/// is how it is recognised here.
bool single_document(const std::string& text, diagnostic_sink& sink) {
  std::istringstream in{text};
  YAML::Parser parser{in};
  document_starts starts;
  while (starts.marks.size() < 3 && parser.HandleNextDocument(starts)) {
    size_t n = starts.marks.size();
    if (n >= 2 && starts.marks[n - 1].pos == starts.marks[n - 2].pos) {
      const auto& at = starts.marks[n - 1];
      std::string what = at.pos >= 0 && static_cast<size_t>(at.pos) < text.size()
                             ? topology_detail::quote_value(text.substr(at.pos, 1))
                             : std::string{"end of input"};
      sink.add(at, "malformed YAML: unexpected " + what,
               "a ',' belongs inside [ ] or { }; check the line for stray characters");
      return false;
    }
  }
  if (starts.marks.size() > 1) {
    sink.add(starts.marks[1], "a topology file holds one YAML document, this is a second one",
             "remove the `---` separator, or split the file");
    return false;
  }
  return true;
}

/// The UTF-8 check and the single-document check, reported into `sink`.
bool loadable_yaml(std::string_view text, diagnostic_sink& sink) {
  if (auto bad = first_non_text(text); bad != std::string_view::npos) {
    char byte[8];
    std::snprintf(byte, sizeof byte, "0x%02x", static_cast<unsigned char>(text[bad]));
    sink.add(origin_of_offset(text, bad), std::string{"byte "} + byte + " is not UTF-8 text",
             "check that the right file was given");
    return false;
  }
  return single_document(std::string{text}, sink);
}

std::optional<topology> parse_text(std::string_view text, diagnostic_sink& sink,
                                   const topology_options& options) {
  if (auto bad = first_non_text(text); bad != std::string_view::npos) {
    char byte[8];
    std::snprintf(byte, sizeof byte, "0x%02x", static_cast<unsigned char>(text[bad]));
    sink.add(origin_of_offset(text, bad),
             std::string{"byte "} + byte + " is not UTF-8 text; a topology is a YAML text file",
             "check that the right file was given (see deploy/topologies/ for examples)");
    return std::nullopt;
  }
  YAML::Node doc;
  try {
    std::string copy{text};
    if (!single_document(copy, sink))
      return std::nullopt;
    doc = YAML::Load(copy);
  } catch (const YAML::DeepRecursion& e) {
    sink.add(e.mark, "YAML nested deeper than yaml-cpp allows",
             "a topology needs only a few levels of nesting; check for unbalanced brackets");
    return std::nullopt;
  } catch (const YAML::Exception& e) {
    sink.add(e.mark, "malformed YAML: " + e.msg,
             "check indentation (spaces, not tabs), brackets, quotes and `key: value` colons");
    return std::nullopt;
  }
  if (doc.IsNull()) {
    sink.add(spec_origin{1, 1}, "the topology is empty",
             "start from an example in deploy/topologies/ (e.g. single-cpu.yaml)");
    return std::nullopt;
  }
  if (!doc.IsMap()) {
    sink.add(doc.Mark(),
             std::string{"a topology must be a map of keys (model, nodes, ...), got "} +
                 topology_detail::describe(doc),
             "start from an example in deploy/topologies/ (e.g. single-cpu.yaml)");
    return std::nullopt;
  }
  topology_detail::parse_context ctx{sink, options, {}, {}, true};
  return topology_detail::parse_root(doc, ctx);
}

/// Reads a whole file into `text`; on failure records why and returns the
/// error code to report.
errc read_file(const std::string& path, std::string& text, diagnostic_sink& sink) {
  std::error_code ec;
  auto st = fs::status(path, ec);
  if (!fs::exists(st)) {
    sink.add(spec_origin{}, "cannot open: no such file", "check the path");
    return errc::not_found;
  }
  if (fs::is_directory(st)) {
    sink.add(spec_origin{}, "is a directory, not a topology file",
             "name a .yaml file, e.g. deploy/topologies/single-cpu.yaml");
    return errc::invalid_argument;
  }
  std::ifstream in{path, std::ios::binary};
  if (!in) {
    sink.add(spec_origin{}, std::string{"cannot open: "} + std::strerror(errno),
             "check the path and its permissions");
    return errc::io_error;
  }
  // Read one byte past the limit to detect oversized files (also pipes).
  text.resize(max_topology_file_bytes + 1);
  in.read(text.data(), static_cast<std::streamsize>(text.size()));
  if (in.bad()) {
    sink.add(spec_origin{}, "read failed", "check the file and the disk");
    return errc::io_error;
  }
  text.resize(static_cast<size_t>(in.gcount()));
  if (text.size() > max_topology_file_bytes) {
    sink.add(spec_origin{},
             "file is larger than " + std::to_string(max_topology_file_bytes >> 20) +
                 " MiB; this is not a topology",
             "check that the right file was given");
    return errc::invalid_argument;
  }
  return errc::none;
}

topology_report finish(std::optional<topology> topo, diagnostic_sink& sink,
                       std::string_view source) {
  topology_report report;
  report.source = std::string{source};
  report.diagnostics = sink.take();
  if (topo && report.diagnostics.empty()) {
    topo->source = report.source;
    report.value = std::move(topo);
  }
  return report;
}

topology_report check_text(std::string_view text, std::string_view source_name,
                           const topology_options& options) {
  diagnostic_sink sink{std::string{source_name}, options.max_diagnostics};
  std::optional<topology> topo;
  try {
    topo = parse_text(text, sink, options);
  } catch (const YAML::Exception& e) {
    topo.reset();
    sink.add(e.mark, "cannot read the topology: " + e.msg, "check the YAML near here");
  } catch (const std::bad_alloc&) {
    topo.reset();
    sink.add(spec_origin{}, "out of memory while checking the topology",
             "check that the right file was given");
  } catch (const std::exception& e) {
    topo.reset();
    sink.add(spec_origin{}, std::string{"internal error while checking: "} + e.what(),
             "please report this with the file");
  }
  return finish(std::move(topo), sink, source_name);
}

std::string joined(const topology_report& report) {
  std::string text = report.to_string();
  if (!text.empty() && text.back() == '\n')
    text.pop_back();
  return text;
}

} // namespace

topology_report check_topology_text(std::string_view text, std::string_view source_name,
                                    const topology_options& options) {
  return check_text(text, source_name, options);
}

topology_report check_topology_file(const std::string& path, topology_options options) {
  diagnostic_sink sink{path, options.max_diagnostics};
  std::string text;
  if (read_file(path, text, sink) != errc::none)
    return finish(std::nullopt, sink, path);
  if (options.base_dir.empty())
    options.base_dir = fs::path{path}.parent_path().string();
  return check_text(text, path, options);
}

result<topology> parse_topology(std::string_view text, std::string_view source_name,
                                const topology_options& options) {
  auto report = check_topology_text(text, source_name, options);
  if (report.ok())
    return std::move(*report.value);
  return make_error(errc::invalid_argument, joined(report));
}

result<topology> load_topology(const std::string& path, const topology_options& options) {
  diagnostic_sink sink{path, options.max_diagnostics};
  std::string text;
  if (auto code = read_file(path, text, sink); code != errc::none)
    return make_error(code, joined(finish(std::nullopt, sink, path)));
  auto opts = options;
  if (opts.base_dir.empty())
    opts.base_dir = fs::path{path}.parent_path().string();
  auto report = check_text(text, path, opts);
  if (report.ok())
    return std::move(*report.value);
  return make_error(errc::invalid_argument, joined(report));
}

status check_yaml_document(std::string_view text, std::string_view source_name) {
  diagnostic_sink sink{std::string{source_name}, 10};
  try {
    if (loadable_yaml(text, sink))
      return {};
  } catch (const YAML::Exception& e) {
    sink.add(e.mark, "malformed YAML: " + e.msg,
             "check indentation (spaces, not tabs), brackets, quotes and `key: value` colons");
  }
  return make_error(errc::invalid_argument,
                    joined(finish(std::nullopt, sink, std::string{source_name})));
}

} // namespace mosaic
