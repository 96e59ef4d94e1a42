// Every ```cpp block in the README and docs/*.md must appear, line for line, in one of the
// programs under docs/examples/ (which the tests build and run and whose output they check),
// so no snippet in the docs can drift from code that compiles and works.
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

namespace {

namespace fs = std::filesystem;
using Lines = std::vector<std::string>;

Lines read_lines(const fs::path& path) {
  std::ifstream in(path);
  Lines lines;
  for (std::string line; std::getline(in, line);) {
    while (!line.empty() && (line.back() == ' ' || line.back() == '\r')) line.pop_back();
    lines.push_back(line);
  }
  return lines;
}

std::vector<Lines> cpp_blocks(const Lines& doc) {
  std::vector<Lines> blocks;
  bool inside = false;
  for (const auto& line : doc) {
    if (!inside && line.rfind("```cpp", 0) == 0) {
      inside = true;
      blocks.emplace_back();
    } else if (inside && line.rfind("```", 0) == 0) {
      inside = false;
    } else if (inside) {
      blocks.back().push_back(line);
    }
  }
  return blocks;
}

TEST(Docs, EveryCppBlockIsPartOfATestedExample) {
  const fs::path root = KARX_SOURCE_DIR;
  std::vector<Lines> examples;
  for (const auto& entry : fs::directory_iterator(root / "docs" / "examples"))
    if (entry.path().extension() == ".cpp") examples.push_back(read_lines(entry.path()));
  ASSERT_FALSE(examples.empty());

  std::vector<fs::path> docs{root / "README.md"};
  for (const auto& entry : fs::directory_iterator(root / "docs"))
    if (entry.path().extension() == ".md") docs.push_back(entry.path());

  int checked = 0;
  for (const auto& doc : docs) {
    for (const auto& block : cpp_blocks(read_lines(doc))) {
      ++checked;
      bool found = std::any_of(examples.begin(), examples.end(), [&](const Lines& ex) {
        return std::search(ex.begin(), ex.end(), block.begin(), block.end()) != ex.end();
      });
      std::string text;
      for (const auto& l : block) text += l + "\n";
      EXPECT_TRUE(found) << doc << ": this cpp block is not part of any docs/examples program:\n" << text;
    }
  }
  EXPECT_GT(checked, 0) << "no cpp blocks found: the check itself is broken";
}

}  // namespace
