#include <cmath>
#include <numbers>

#include "engine/model/builtin_model_parts.hpp"

namespace mosaic::builtin {

double splitmix64::normal() {
  double u1 = uniform();
  double u2 = uniform();
  if (u1 < 1e-300)
    u1 = 1e-300;
  return std::sqrt(-2.0 * std::log(u1)) * std::cos(2.0 * std::numbers::pi * u2);
}

namespace {

constexpr const char* colors[] = {"red",    "blue",  "green", "yellow", "orange", "purple",
                                  "black",  "white", "gray",  "brown",  "pink",   "golden",
                                  "silver", "dark",  "light", "bright", "pale",   "striped"};
constexpr const char* shapes[] = {"circle", "square", "triangle", "rectangle", "star",
                                  "line",   "dot",    "ring",     "diamond",   "hexagon",
                                  "oval",   "cross",  "arrow",    "spiral",    "grid"};
constexpr const char* nouns[] = {
    "cat",     "dog",     "horse",    "bird",    "car",      "truck",      "bicycle",    "house",
    "tree",    "flower",  "mountain", "river",   "lake",     "street",     "building",   "window",
    "door",    "table",   "chair",    "person",  "woman",    "man",        "child",      "ball",
    "book",    "cup",     "bottle",   "plate",   "boat",     "train",      "airplane",   "cloud",
    "sky",     "road",    "bridge",   "garden",  "kitchen",  "room",       "wall",       "picture",
    "sign",    "lamp",    "computer", "phone",   "umbrella", "bag",        "hat",        "shirt",
    "shoe",    "apple",   "banana",   "orange",  "sandwich", "pizza",      "cake",       "field",
    "beach",   "forest",  "city",     "village", "market",   "station",    "park",       "fence",
    "roof",    "bench",   "clock",    "mirror",  "camera",   "guitar",     "piano",      "elephant",
    "giraffe", "zebra",   "sheep",    "cow",     "bear",     "rabbit",     "fish",       "shadow",
    "pattern", "texture", "corner",   "edge",    "center",   "background", "foreground", "object",
    "shape",   "image",   "photo",    "scene",   "diagram",  "chart",      "map",        "letter",
    "number",  "word"};
constexpr const char* adjectives[] = {
    "small",  "large",   "tiny",   "huge",   "old",     "new",    "round",    "flat",   "tall",
    "short",  "wide",    "thin",   "heavy",  "soft",    "shiny",  "wooden",   "metal",  "plastic",
    "empty",  "full",    "open",   "closed", "busy",    "quiet",  "sunny",    "cloudy", "rainy",
    "happy",  "sad",     "calm",   "noisy",  "clean",   "dirty",  "broken",   "famous", "strange",
    "simple", "complex", "blurry", "sharp",  "distant", "nearby", "colorful", "narrow"};
constexpr const char* verbs[] = {"is sitting", "is standing", "is running", "is lying",
                                 "is flying",  "is floating", "is parked",  "is hanging",
                                 "is leaning", "is resting",  "is waiting", "is moving",
                                 "appears",    "stands",      "sits",       "rests",
                                 "shines",     "grows",       "jumps",      "walks"};
constexpr const char* preps[] = {
    "next to", "behind", "in front of", "above",  "below",  "near",  "inside",  "on top of",
    "beside",  "under",  "between",     "across", "around", "along", "left of", "right of"};
constexpr const char* numbers[] = {"one",   "two",   "three", "four", "five",   "six",
                                   "seven", "eight", "nine",  "ten",  "twelve", "twenty"};
constexpr const char* syllables[] = {"ka",  "lo",  "mi",  "ra",  "ten", "vo",  "shi", "dar", "en",
                                     "qui", "bel", "tor", "na",  "ul",  "fen", "gri", "os",  "pa",
                                     "zu",  "ith", "mar", "lin", "kor", "sa",  "ve",  "dro", "am",
                                     "bri", "hu",  "sel", "tam", "cor", "nev", "ia",  "ox",  "ru"};

template <class T, size_t N>
const char* pick(splitmix64& r, T (&list)[N]) {
  return list[r.below(N)];
}

// Names built from syllables give the BPE trainer enough distinct strings to
// fill the larger vocabulary.
std::string name(splitmix64& r) {
  std::string s;
  int n = 2 + static_cast<int>(r.below(3));
  for (int i = 0; i < n; ++i)
    s += pick(r, syllables);
  s[0] = static_cast<char>(s[0] - 'a' + 'A');
  return s;
}

std::string plural(const char* noun) {
  std::string s = noun;
  if (s.back() == 's' || s.back() == 'h' || s.back() == 'x')
    return s + "es";
  if (s.back() == 'y' && s.size() > 1 && s[s.size() - 2] != 'a' && s[s.size() - 2] != 'e' &&
      s[s.size() - 2] != 'o')
    return s.substr(0, s.size() - 1) + "ies";
  return s + "s";
}

std::string sentence(splitmix64& r) {
  std::string s;
  switch (r.below(10)) {
  case 0:
    s = std::string("The ") + pick(r, adjectives) + " " + pick(r, nouns) + " " + pick(r, verbs) +
        " " + pick(r, preps) + " the " + pick(r, colors) + " " + pick(r, shapes) + ".";
    break;
  case 1:
    s = std::string("What color is the ") + pick(r, nouns) + " " + pick(r, preps) + " the " +
        pick(r, nouns) + "?";
    break;
  case 2:
    s = std::string("There are ") + pick(r, numbers) + " " + plural(pick(r, nouns)) +
        " in the image, and " + std::to_string(r.below(100)) + " of them are " + pick(r, colors) +
        ".";
    break;
  case 3:
    s = std::string("A ") + pick(r, colors) + " " + pick(r, shapes) + " " + pick(r, verbs) +
        " near a " + pick(r, adjectives) + " " + pick(r, nouns) + ".";
    break;
  case 4:
    s = std::string("Describe the ") + pick(r, nouns) + " in the " + pick(r, nouns) + " in detail.";
    break;
  case 5:
    s = name(r) + " took this photo of a " + pick(r, adjectives) + " " + pick(r, nouns) + " in " +
        name(r) + " in " + std::to_string(1950 + r.below(75)) + ".";
    break;
  case 6:
    s = std::string("How many ") + plural(pick(r, shapes)) + " are " + pick(r, preps) + " the " +
        pick(r, nouns) + "? The answer is " + pick(r, numbers) + ".";
    break;
  case 7:
    s = std::string("In this picture, the ") + pick(r, nouns) + " looks " + pick(r, adjectives) +
        " and " + pick(r, adjectives) + ", while the " + pick(r, nouns) + " is " + pick(r, colors) +
        ".";
    break;
  case 8:
    s = std::string("Is the ") + pick(r, shapes) + " " + pick(r, colors) + " or " +
        pick(r, colors) + "? It is " + pick(r, colors) + ".";
    break;
  default:
    s = std::string("The ") + pick(r, nouns) + " of " + name(r) + " " + pick(r, verbs) + " " +
        pick(r, preps) + " a " + pick(r, shapes) + " with " + pick(r, numbers) + " " +
        plural(pick(r, nouns)) + ".";
    break;
  }
  return s;
}

} // namespace

std::vector<std::string> training_corpus(uint64_t seed, int n_sentences) {
  splitmix64 r(seed);
  std::vector<std::string> out;
  out.reserve(static_cast<size_t>(n_sentences));
  for (int i = 0; i < n_sentences; ++i)
    out.push_back(sentence(r));
  return out;
}

} // namespace mosaic::builtin
