#include "sim/report.hpp"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <fstream>
#include <map>
#include <sstream>

#include <nlohmann/json.hpp>

#include "sim/number_text.hpp"

namespace mosaic::sim {

namespace {

/// requests.csv's header line, which read_requests_csv checks for.
constexpr const char* requests_csv_header =
    "label,rate_req_per_s,id,dialogue,turn,arrival_s,sent_s,ttft_s,tpot_s,e2e_s,"
    "prompt_tokens,image_tokens,output_tokens,n_images,ok,error";

void put_latency(nlohmann::json& j, const std::string& name, const latency_stats& s) {
  j[name + "_mean_s"] = s.mean;
  j[name + "_median_s"] = s.median;
  j[name + "_p90_s"] = s.p90;
  j[name + "_p99_s"] = s.p99;
}

std::string csv_field(const std::string& s) {
  if (s.find_first_of(",\"\n") == std::string::npos)
    return s;
  std::string out = "\"";
  for (char c : s)
    out += c == '"' ? std::string{"\"\""} : std::string(1, c == '\n' ? ' ' : c);
  return out + "\"";
}

std::string xml_escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    switch (c) {
    case '<':
      out += "&lt;";
      break;
    case '>':
      out += "&gt;";
      break;
    case '&':
      out += "&amp;";
      break;
    case '"':
      out += "&quot;";
      break;
    default:
      out += c;
    }
  }
  return out;
}


/// A "nice" upper bound for an axis.
double nice_max(double v) {
  if (!(v > 0))
    return 1.0;
  const double mag = std::pow(10.0, std::floor(std::log10(v)));
  for (double m : {1.0, 2.0, 2.5, 5.0, 10.0})
    if (v <= m * mag)
      return m * mag;
  return 10 * mag;
}

} // namespace

status write_text(const std::filesystem::path& path, const std::string& text) {
  std::ofstream out{path, std::ios::binary | std::ios::trunc};
  out << text;
  out.close();
  if (!out)
    return make_error(errc::io_error, "cannot write ", path.string());
  return {};
}

nlohmann::json summary_json(const run_summary& s) {
  nlohmann::json j;
  j["label"] = s.label;
  j["request_rate_req_per_s"] = s.rate;
  j["completed_requests"] = s.completed;
  j["failed_requests"] = s.failed;
  j["duration_s"] = s.duration_s;
  j["total_input_tokens"] = s.total_input_tokens;
  j["total_output_tokens"] = s.total_output_tokens;
  j["total_image_tokens"] = s.total_image_tokens;
  put_latency(j, "ttft", s.ttft);
  put_latency(j, "tpot", s.tpot);
  put_latency(j, "itl", s.itl);
  put_latency(j, "e2e", s.e2e);
  j["request_throughput_req_per_s"] = s.request_throughput;
  j["output_token_throughput_tok_per_s"] = s.output_token_throughput;
  j["total_token_throughput_tok_per_s"] = s.total_token_throughput;
  j["image_token_throughput_tok_per_s"] = s.image_token_throughput;
  j["goodput_req_per_s"] = s.goodput;
  j["good_requests"] = s.good;
  return j;
}

std::string requests_csv(const std::vector<run_result>& runs) {
  std::ostringstream out;
  out << requests_csv_header << '\n';
  for (const auto& run : runs)
    for (const auto& r : run.records) {
      out << csv_field(run.summary.label) << ',' << num(run.summary.rate) << ',' << r.id << ','
          << r.dialogue << ',' << r.turn << ',' << num(r.arrival_s, 9) << ',' << num(r.sent_s, 9)
          << ',' << (r.ok ? num(r.ttft(), 9) : "") << ',' << (r.ok ? num(r.tpot(), 9) : "") << ','
          << (r.ok ? num(r.e2e(), 9) : "") << ',' << r.prompt_tokens << ',' << r.image_tokens << ','
          << r.output_tokens << ',' << r.n_images << ',' << (r.ok ? 1 : 0) << ','
          << csv_field(r.error) << '\n';
    }
  return out.str();
}

namespace {

/// The fields of one CSV line as csv_field writes them (quotes doubled).
result<std::vector<std::string>> split_csv_line(std::string_view line) {
  std::vector<std::string> out(1);
  bool quoted = false;
  for (size_t i = 0; i < line.size(); ++i) {
    const char c = line[i];
    if (quoted) {
      if (c != '"')
        out.back() += c;
      else if (i + 1 < line.size() && line[i + 1] == '"')
        out.back() += line[++i];
      else
        quoted = false;
    } else if (c == '"') {
      quoted = true;
    } else if (c == ',') {
      out.emplace_back();
    } else if (c != '\r') {
      out.back() += c;
    }
  }
  if (quoted)
    return make_error(errc::invalid_argument, "an unterminated quote");
  return out;
}

result<double> csv_number(const std::string& field, const char* name) {
  double v = 0.0;
  const auto* end = field.data() + field.size();
  auto [p, ec] = std::from_chars(field.data(), end, v);
  if (ec != std::errc{} || p != end || !std::isfinite(v))
    return make_error(errc::invalid_argument, "column ", name, " is not a number: '", field, "'");
  return v;
}

} // namespace

result<std::vector<run_result>> read_requests_csv(const std::filesystem::path& path,
                                                  const slo& objectives) {
  std::ifstream in{path};
  if (!in)
    return make_error(errc::not_found, "cannot open ", path.string());
  std::string line;
  if (std::getline(in, line) && !line.empty() && line.back() == '\r')
    line.pop_back();
  if (line != requests_csv_header)
    return make_error(errc::invalid_argument, path.string(),
                      ": not a requests.csv of `mosaic sim` (its header line differs)");
  std::vector<run_result> runs;
  std::map<std::pair<std::string, double>, size_t> index;
  for (size_t n = 2; std::getline(in, line); ++n) {
    if (line.empty())
      continue;
    auto bad = [&](const error& e) {
      return make_error(errc::invalid_argument, path.string(), ":", std::to_string(n), ": ",
                        e.message);
    };
    auto f = split_csv_line(line);
    if (!f)
      return bad(f.err());
    if (f->size() != 16)
      return bad(make_error(errc::invalid_argument, std::to_string(f->size()),
                            " fields, expected 16"));
    const auto& c = *f;
    double v[13] = {};
    static constexpr const char* names[] = {
        "rate_req_per_s", "id",     "dialogue",      "turn",         "arrival_s",
        "sent_s",         "ttft_s", "tpot_s",        "e2e_s",        "prompt_tokens",
        "image_tokens",   "output_tokens", "n_images"};
    const bool ok = c[14] == "1";
    for (size_t k = 0; k < 13; ++k) {
      if (!ok && (k == 6 || k == 7 || k == 8) && c[k + 1].empty())
        continue; // a failed request has no latencies
      auto x = csv_number(c[k + 1], names[k]);
      if (!x)
        return bad(x.err());
      // Counts and ids: whole numbers an int holds (a hostile file must
      // not make the casts below undefined).
      const bool count = k == 1 || k == 2 || k == 3 || k >= 9;
      if (count && !(*x >= 0 && *x <= 2147483647.0 && *x == std::floor(*x)))
        return bad(make_error(errc::invalid_argument, "column ", names[k],
                              " is not a count: '", c[k + 1], "'"));
      v[k] = *x;
    }
    request_record r;
    r.id = uint64_t(v[1]);
    r.dialogue = int(v[2]);
    r.turn = int(v[3]);
    r.arrival_s = v[4];
    r.sent_s = v[5];
    if (ok) {
      r.first_token_s = r.sent_s + v[6];
      r.end_s = r.sent_s + v[8];
    }
    r.prompt_tokens = int(v[9]);
    r.image_tokens = int(v[10]);
    r.output_tokens = int(v[11]);
    r.n_images = int(v[12]);
    r.ok = ok;
    r.error = c[15];
    auto [it, fresh] = index.try_emplace({c[0], v[0]}, runs.size());
    if (fresh) {
      runs.emplace_back();
      runs.back().summary.label = c[0];
      runs.back().summary.rate = v[0];
    }
    runs[it->second].records.push_back(std::move(r));
  }
  for (auto& run : runs) {
    auto label = run.summary.label;
    const double rate = run.summary.rate;
    run.summary = summarize(run.records, objectives);
    run.summary.label = std::move(label);
    run.summary.rate = rate;
  }
  return runs;
}

std::string rate_plot_svg(const std::vector<run_summary>& runs, const std::string& title) {
  constexpr int panel_w = 360, panel_h = 240, left = 60, top = 40, gap = 90;
  constexpr int width = left + 2 * panel_w + gap + 140, height = top + panel_h + 60;
  static const char* colours[] = {"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e",
                                  "#9467bd", "#8c564b", "#e377c2", "#17becf"};
  std::map<std::string, std::vector<const run_summary*>> series;
  std::vector<std::string> order;
  double max_rate = 0, max_ttft = 0, max_tput = 0;
  for (const auto& r : runs) {
    if (series.count(r.label) == 0)
      order.push_back(r.label);
    series[r.label].push_back(&r);
    max_rate = std::max(max_rate, r.rate);
    max_ttft = std::max(max_ttft, r.ttft.mean);
    max_tput = std::max(max_tput, r.output_token_throughput);
  }
  max_rate = nice_max(max_rate);
  max_ttft = nice_max(max_ttft);
  max_tput = nice_max(max_tput);

  std::ostringstream s;
  s << "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" << width << "\" height=\"" << height
    << "\" font-family=\"sans-serif\" font-size=\"11\">\n"
    << "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
    << "<text x=\"" << left << "\" y=\"20\" font-size=\"14\">" << xml_escape(title) << "</text>\n";
  auto panel = [&](int x0, double ymax, const std::string& ylabel, auto value) {
    const int y0 = top;
    s << "<rect x=\"" << x0 << "\" y=\"" << y0 << "\" width=\"" << panel_w << "\" height=\""
      << panel_h << "\" fill=\"none\" stroke=\"#444\"/>\n";
    for (int i = 0; i <= 4; ++i) {
      const double fx = i / 4.0;
      const int tx = x0 + int(fx * panel_w), ty = y0 + panel_h - int(fx * panel_h);
      s << "<line x1=\"" << x0 << "\" y1=\"" << ty << "\" x2=\"" << x0 + panel_w << "\" y2=\"" << ty
        << "\" stroke=\"#ddd\"/>\n"
        << "<text x=\"" << x0 - 5 << "\" y=\"" << ty + 4 << "\" text-anchor=\"end\">"
        << num(ymax * fx, 3) << "</text>\n"
        << "<text x=\"" << tx << "\" y=\"" << y0 + panel_h + 15 << "\" text-anchor=\"middle\">"
        << num(max_rate * fx, 3) << "</text>\n";
    }
    s << "<text x=\"" << x0 + panel_w / 2 << "\" y=\"" << y0 + panel_h + 32
      << "\" text-anchor=\"middle\">offered rate (req/s)</text>\n"
      << "<text x=\"" << x0 << "\" y=\"" << y0 - 6 << "\">" << xml_escape(ylabel) << "</text>\n";
    for (size_t k = 0; k < order.size(); ++k) {
      auto pts = series[order[k]];
      std::sort(pts.begin(), pts.end(), [](auto* a, auto* b) { return a->rate < b->rate; });
      std::string path;
      for (const auto* p : pts) {
        const double x = x0 + p->rate / max_rate * panel_w;
        const double y = y0 + panel_h - value(*p) / ymax * panel_h;
        path += num(x, 6) + "," + num(y, 6) + " ";
        s << "<circle cx=\"" << num(x, 6) << "\" cy=\"" << num(y, 6) << "\" r=\"3\" fill=\""
          << colours[k % 8] << "\"/>\n";
      }
      s << "<polyline points=\"" << path << "\" fill=\"none\" stroke=\"" << colours[k % 8]
        << "\" stroke-width=\"1.5\"/>\n";
    }
  };
  panel(left, max_ttft, "mean TTFT (s)", [](const run_summary& r) { return r.ttft.mean; });
  panel(left + panel_w + gap, max_tput, "output throughput (tok/s)",
        [](const run_summary& r) { return r.output_token_throughput; });
  for (size_t k = 0; k < order.size(); ++k) {
    const int lx = left + 2 * panel_w + gap + 15, ly = top + 10 + int(k) * 16;
    s << "<rect x=\"" << lx << "\" y=\"" << ly - 8 << "\" width=\"10\" height=\"10\" fill=\""
      << colours[k % 8] << "\"/>\n"
      << "<text x=\"" << lx + 14 << "\" y=\"" << ly + 1 << "\">" << xml_escape(order[k])
      << "</text>\n";
  }
  s << "</svg>\n";
  return s.str();
}

status write_report(const std::filesystem::path& dir, const report_header& header,
                    const std::vector<run_result>& runs, const nlohmann::json* extra) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec)
    return make_error(errc::io_error, "cannot create ", dir.string(), ": ", ec.message());
  nlohmann::json j;
  j["mode"] = header.mode;
  j["workload"] = header.workload;
  j["seed"] = header.seed;
  j["target"] = header.target;
  j["model"] = header.model;
  j["slo"] = {{"ttft_s", header.objectives.ttft_s},
              {"tpot_s", header.objectives.tpot_s},
              {"e2e_s", header.objectives.e2e_s}};
  j["runs"] = nlohmann::json::array();
  std::vector<run_summary> summaries;
  for (const auto& r : runs) {
    j["runs"].push_back(summary_json(r.summary));
    summaries.push_back(r.summary);
  }
  if (runs.size() == 1) {
    const nlohmann::json only = summary_json(runs.front().summary);
    j.update(only);
  }
  if (extra != nullptr)
    j.update(*extra);
  MOSAIC_TRY(write_text(dir / "summary.json", j.dump(2) + "\n"));
  MOSAIC_TRY(write_text(dir / "requests.csv", requests_csv(runs)));
  return write_text(
      dir / "plot.svg",
      rate_plot_svg(summaries, header.mode + ": " + header.workload + " (" + header.target + ")"));
}

} // namespace mosaic::sim
