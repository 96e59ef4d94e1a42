// docs/api.md must name every public, exported name of the library, as `karx::Name`.
//
// The test reads the module interface units under modules/ and impl/, follows the
// `export import` graph from `karx` (what `import karx;` brings in), and extracts the names
// those units export at namespace scope in namespace karx or a namespace nested in it (written
// `karx::sim::Name` then), except anything in a namespace called `detail` or an anonymous one.
// The extractor is a small lexer plus a declaration scanner, not a C++ parser:
//
//  - comments, string and character literals and preprocessor lines are dropped first;
//  - a file's module comes from its `[export] module NAME;` line; `export import X;` and
//    `export import :part;` are the edges of the graph; karx.machinery is never public;
//  - a declaration is exported when it starts with `export` or sits in an `export namespace`
//    or `export { }` block; namespaces (`a::b`, inline, anonymous) are tracked by their braces;
//  - each declaration at namespace scope is read up to its `;` or its body's `{` (a body is
//    skipped by counting braces), after dropping `template <...>` heads and requires-clauses:
//    `concept N`, `using N =`, `using ns::N;`, `class|struct|union|enum N`, a function (the
//    name before its first top-level parenthesis) or a variable (the last name before `=`,
//    `{`, `[` or `;`); the enumerators of an unscoped enum too. Operators are skipped (they
//    belong with their class), as are out-of-line definitions of qualified names.
#include <gtest/gtest.h>

#include <algorithm>
#include <cctype>
#include <cstddef>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <vector>

namespace {

namespace fs = std::filesystem;
using Tokens = std::vector<std::string>;

// --- Lexing ---------------------------------------------------------------------------------

bool ident_start(char c) { return std::isalpha(static_cast<unsigned char>(c)) || c == '_'; }
bool ident_char(char c) { return std::isalnum(static_cast<unsigned char>(c)) || c == '_'; }
bool is_identifier(const std::string& t) { return !t.empty() && ident_start(t[0]); }

// Identifiers, numbers, "" for a string literal, '' for a character literal, the punctuators
// `::`, `->`, `&&`, `||`, `...`, and every other character on its own (so `>>` is two `>`).
Tokens tokenize(const std::string& s) {
  Tokens out;
  std::size_t i = 0;
  const std::size_t n = s.size();
  bool line_start = true;  // only blanks since the last newline: a `#` starts a directive
  auto skip_quoted = [&](char quote) {
    for (++i; i < n && s[i] != quote; ++i)
      if (s[i] == '\\') ++i;
    ++i;
  };
  while (i < n) {
    const char c = s[i];
    if (c == '\n') {
      line_start = true;
      ++i;
    } else if (std::isspace(static_cast<unsigned char>(c))) {
      ++i;
    } else if (s.compare(i, 2, "//") == 0) {
      while (i < n && s[i] != '\n') ++i;
    } else if (s.compare(i, 2, "/*") == 0) {
      const std::size_t end = s.find("*/", i + 2);
      i = end == std::string::npos ? n : end + 2;
    } else if (c == '#' && line_start) {
      while (i < n && s[i] != '\n') i += (s[i] == '\\' && i + 1 < n) ? 2 : 1;
    } else {
      line_start = false;
      if (ident_start(c)) {
        std::size_t j = i;
        while (j < n && ident_char(s[j])) ++j;
        std::string word = s.substr(i, j - i);
        const bool raw_prefix = word == "R" || word == "u8R" || word == "uR" || word == "UR" || word == "LR";
        if (raw_prefix && j < n && s[j] == '"') {  // R"delim( ... )delim"
          const std::size_t open = s.find('(', j);
          const std::string close = ")" + s.substr(j + 1, open - j - 1) + "\"";
          const std::size_t end = open == std::string::npos ? std::string::npos : s.find(close, open);
          i = end == std::string::npos ? n : end + close.size();
          out.push_back("\"\"");
        } else {
          out.push_back(word);
          i = j;
        }
      } else if (std::isdigit(static_cast<unsigned char>(c)) ||
                 (c == '.' && i + 1 < n && std::isdigit(static_cast<unsigned char>(s[i + 1])))) {
        std::size_t j = i + 1;
        while (j < n && (ident_char(s[j]) || s[j] == '.' || s[j] == '\'')) ++j;
        out.push_back(s.substr(i, j - i));
        i = j;
      } else if (c == '"') {
        skip_quoted('"');
        out.push_back("\"\"");
      } else if (c == '\'') {
        skip_quoted('\'');
        out.push_back("''");
      } else {
        static const char* const multi[] = {"...", "::", "->", "&&", "||"};
        std::size_t len = 1;
        for (const char* m : multi)
          if (s.compare(i, std::string(m).size(), m) == 0) {
            len = std::string(m).size();
            break;
          }
        out.push_back(s.substr(i, len));
        i += len;
      }
    }
  }
  return out;
}

// --- Declarations ---------------------------------------------------------------------------

const std::set<std::string>& keywords() {
  static const std::set<std::string> k{
      "alignas",       "alignof",   "auto",      "bool",         "char",    "class",    "concept",  "const",
      "consteval",     "constexpr", "constinit", "decltype",     "double",  "enum",     "explicit", "export",
      "extern",        "float",     "friend",    "inline",       "int",     "long",     "mutable",  "namespace",
      "noexcept",      "operator",  "requires",  "return",       "short",   "signed",   "sizeof",   "static",
      "static_assert", "struct",    "template",  "thread_local", "typedef", "typename", "union",    "unsigned",
      "using",         "virtual",   "void",      "volatile",     "wchar_t", "char8_t",  "char16_t", "char32_t"};
  return k;
}

// Index past the group opened at `i` ("(", "[" or "{"), counting all three kinds.
std::size_t skip_group(const Tokens& t, std::size_t i) {
  int depth = 0;
  for (; i < t.size(); ++i) {
    const std::string& x = t[i];
    if (x == "(" || x == "[" || x == "{") ++depth;
    if (x == ")" || x == "]" || x == "}") {
      if (--depth == 0) return i + 1;
    }
  }
  return t.size();
}

// Index past the angle brackets opened at `i` (a template parameter or argument list).
std::size_t skip_angles(const Tokens& t, std::size_t i) {
  int depth = 0;
  for (; i < t.size(); ++i) {
    const std::string& x = t[i];
    if (x == "(" || x == "[" || x == "{") {
      i = skip_group(t, i) - 1;
    } else if (x == "<") {
      ++depth;
    } else if (x == ">") {
      if (--depth == 0) return i + 1;
    }
  }
  return t.size();
}

// Index past a requires-clause starting at `i` (the `requires` token): primaries joined by
// && and ||, each a parenthesized expression or a qualified name with template arguments.
std::size_t skip_requires_clause(const Tokens& t, std::size_t i) {
  ++i;
  for (;;) {
    if (i < t.size() && t[i] == "!") ++i;
    if (i < t.size() && t[i] == "(") {
      i = skip_group(t, i);
    } else {
      if (i < t.size() && t[i] == "::") ++i;
      while (i < t.size() && is_identifier(t[i])) {
        ++i;
        if (i < t.size() && t[i] == "<") i = skip_angles(t, i);
        if (i < t.size() && t[i] == "::")
          ++i;
        else
          break;
      }
    }
    if (i < t.size() && (t[i] == "&&" || t[i] == "||"))
      ++i;
    else
      return i;
  }
}

struct Declared {
  std::vector<std::string> names;  // usually one; the enumerators of an unscoped enum add more
  bool function = false;           // a function body ends the declaration; others go on to `;`
};

// The names a declaration (its tokens up to, not including, its `;` or body `{`) introduces.
// `body` is the tokens of its body, if it has one.
Declared classify(const Tokens& d, const Tokens& body) {
  Declared out;
  std::size_t i = 0;
  auto at = [&](std::size_t k) -> const std::string& {
    static const std::string none;
    return k < d.size() ? d[k] : none;
  };
  auto skip_attributes = [&] {
    for (;;) {
      if (at(i) == "[" && at(i + 1) == "[") {
        i = skip_group(d, i);
      } else if ((at(i) == "alignas" || at(i) == "__attribute__" || at(i) == "__declspec") && at(i + 1) == "(") {
        i = skip_group(d, i + 1);
      } else {
        return;
      }
    }
  };
  // Heads: export, template <...> (any number), requires-clauses, attributes.
  for (;;) {
    skip_attributes();
    if (at(i) == "export") {
      ++i;
    } else if (at(i) == "template") {
      ++i;
      if (at(i) == "<") i = skip_angles(d, i);
    } else if (at(i) == "requires") {
      i = skip_requires_clause(d, i);
    } else {
      break;
    }
  }
  const std::string& first = at(i);
  if (first.empty() || first == "static_assert" || first == "import" || first == "module" || first == "extern" ||
      first == "namespace" || first == "friend")
    return out;
  if (first == "concept") {
    if (is_identifier(at(i + 1))) out.names.push_back(at(i + 1));
    return out;
  }
  if (first == "using") {
    if (at(i + 1) == "namespace" || at(i + 1) == "enum") return out;
    const auto eq = std::find(d.begin() + static_cast<std::ptrdiff_t>(i), d.end(), "=");
    if (eq != d.end()) {  // using N [[attr]] = ...;
      if (is_identifier(at(i + 1))) out.names.push_back(at(i + 1));
    } else {  // using ns::N;
      for (std::size_t k = d.size(); k > i + 1; --k)
        if (is_identifier(d[k - 1]) && d[k - 1] != "typename") {
          out.names.push_back(d[k - 1]);
          break;
        }
    }
    return out;
  }
  if (first == "class" || first == "struct" || first == "union" || first == "enum") {
    std::size_t k = i + 1;
    const bool scoped = first == "enum" && (at(k) == "class" || at(k) == "struct");
    if (scoped) ++k;
    const std::size_t save = i;
    i = k;
    skip_attributes();
    k = i;
    i = save;
    if (is_identifier(at(k)) && at(k + 1) != "::") {
      std::size_t after = k + 1;
      if (at(after) == "<") after = skip_angles(d, after);  // a specialization
      const std::string& next = at(after);
      // `struct X x;`, `struct X* f();`: an elaborated type in some other declaration.
      const bool elaborated = next == "(" || next == "*" || next == "&" || next == "&&" || is_identifier(next);
      if (!elaborated || next == "final") {
        out.names.push_back(at(k));
        if (first == "enum" && !scoped) {  // unscoped: the enumerators are namespace members
          bool expect = true;
          for (std::size_t b = 0; b < body.size(); ++b) {
            if (body[b] == "(" || body[b] == "{" || body[b] == "[") {
              b = skip_group(body, b) - 1;
            } else if (body[b] == ",") {
              expect = true;
            } else if (expect && is_identifier(body[b])) {
              out.names.push_back(body[b]);
              expect = false;
            } else {
              expect = false;
            }
          }
        }
        return out;
      }
    }
  }
  // A function or a variable: scan at angle depth 0.
  const bool is_typedef = first == "typedef";
  int angles = 0;
  std::string last;  // the last unqualified identifier at depth 0
  bool last_qualified = false;
  for (std::size_t k = i; k < d.size(); ++k) {
    const std::string& x = d[k];
    if (x == "operator" && angles == 0) {  // operators go with their class
      out.function = true;
      return out;
    }
    if ((x == "decltype" || x == "noexcept" || x == "alignas" || x == "sizeof" || x == "__attribute__") &&
        at(k + 1) == "(") {
      k = skip_group(d, k + 1) - 1;
      continue;
    }
    if (x == "[" && at(k + 1) == "[") {
      k = skip_group(d, k) - 1;
      continue;
    }
    if (x == "<" && k > 0 && (is_identifier(d[k - 1]) || d[k - 1] == ">")) {
      ++angles;
      continue;
    }
    if (x == ">" && angles > 0) {
      --angles;
      continue;
    }
    if (angles > 0) {
      if (x == "(" || x == "[" || x == "{") k = skip_group(d, k) - 1;
      continue;
    }
    if (x == "(") {
      if (at(k + 1) == "*" || at(k + 1) == "&" || at(k + 1) == "^") {  // (*name)(...): a pointer
        const std::size_t end = skip_group(d, k);
        for (std::size_t m = end; m > k + 1; --m)
          if (is_identifier(d[m - 1])) {
            out.names.push_back(d[m - 1]);
            break;
          }
        return out;
      }
      out.function = !is_typedef;  // `Outside::member() {}` too: its body ends the declaration
      if (!is_typedef && !last.empty() && !last_qualified) out.names.push_back(last);
      return out;
    }
    if (x == "=" || x == "[" || x == "{" || x == ":") break;
    if (is_identifier(x)) {
      last = x;
      last_qualified = k > 0 && d[k - 1] == "::";
      if (k > 0 && d[k - 1] == "~") last_qualified = true;  // a destructor
    }
  }
  if (!last.empty() && !last_qualified) out.names.push_back(last);
  return out;
}

// --- Files, modules and scopes --------------------------------------------------------------

struct Unit {
  fs::path file;
  std::string module;                  // "karx.task:spawn"; empty if none
  std::vector<std::string> reexports;  // modules this one `export import`s
  Tokens tokens;
};

std::string read_file(const fs::path& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

Unit read_unit(const fs::path& file) {
  Unit u{file, {}, {}, tokenize(read_file(file))};
  const Tokens& t = u.tokens;
  auto name_until_semicolon = [&](std::size_t k) {
    std::string name;
    for (; k < t.size() && t[k] != ";"; ++k) name += t[k];
    return name;
  };
  for (std::size_t k = 0; k < t.size(); ++k) {
    if (t[k] != "module" || (k > 0 && t[k - 1] != ";" && t[k - 1] != "export" && t[k - 1] != "}")) continue;
    const std::string name = name_until_semicolon(k + 1);
    if (!name.empty() && name[0] != ':' && u.module.empty()) u.module = name;
  }
  const std::string primary = u.module.substr(0, u.module.find(':'));
  for (std::size_t k = 0; k + 1 < t.size(); ++k) {
    if (t[k] != "export" || t[k + 1] != "import") continue;
    const std::string name = name_until_semicolon(k + 2);
    u.reexports.push_back(!name.empty() && name[0] == ':' ? primary + name : name);
  }
  return u;
}

struct Scope {
  std::vector<std::string> path;  // namespace path; "" marks an anonymous namespace
  bool exported = false;
};

// The exported names at namespace scope of one unit, qualified ("karx::spawn").
std::set<std::string> exported_names(const Unit& u) {
  std::set<std::string> found;
  const Tokens& t = u.tokens;
  std::vector<Scope> scopes{Scope{}};
  Tokens decl;
  auto record = [&](const Declared& declared, bool exported) {
    const Scope& s = scopes.back();
    if (!exported || s.path.empty() || s.path[0] != "karx") return;
    std::string prefix;
    for (const std::string& part : s.path) {
      if (part.empty() || part == "detail") return;
      prefix += part + "::";
    }
    for (const std::string& name : declared.names)
      if (!keywords().count(name)) found.insert(prefix + name);
  };
  auto decl_exported = [&] { return scopes.back().exported || (!decl.empty() && decl[0] == "export"); };
  for (std::size_t i = 0; i < t.size();) {
    const std::string& x = t[i];
    if (x == "(" || x == "[") {  // a group, braces inside included, belongs to the declaration
      const std::size_t end = skip_group(t, i);
      decl.insert(decl.end(), t.begin() + static_cast<std::ptrdiff_t>(i), t.begin() + static_cast<std::ptrdiff_t>(end));
      i = end;
    } else if (x == ";") {
      record(classify(decl, {}), decl_exported());
      decl.clear();
      ++i;
    } else if (x == "}") {  // closes a namespace or an export / linkage block
      decl.clear();
      if (scopes.size() > 1) scopes.pop_back();
      ++i;
    } else if (x == "{") {
      const bool exported = decl_exported();
      std::size_t k = !decl.empty() && decl[0] == "export" ? 1 : 0;
      const bool is_inline = k < decl.size() && decl[k] == "inline";
      if (is_inline) ++k;
      if (k == decl.size() || (decl[k] == "extern" && k + 2 == decl.size())) {  // export { or extern "C++" {
        scopes.push_back(Scope{scopes.back().path, exported});
        decl.clear();
        ++i;
      } else if (decl[k] == "namespace") {
        Scope s{scopes.back().path, exported};
        if (k + 1 == decl.size()) s.path.push_back("");
        for (std::size_t m = k + 1; m < decl.size(); ++m) {
          // `namespace a::inline b`: an inline namespace's members are members of its parent.
          if (decl[m] == "inline") {
            ++m;
            continue;
          }
          if (is_identifier(decl[m]) && !(is_inline && m + 1 == decl.size())) s.path.push_back(decl[m]);
        }
        scopes.push_back(s);
        decl.clear();
        ++i;
      } else {  // a body: class, function, enum, initializer, requires-expression
        const std::size_t end = skip_group(t, i);
        const Tokens body(t.begin() + static_cast<std::ptrdiff_t>(i) + 1,
                          t.begin() + static_cast<std::ptrdiff_t>(end) - 1);
        const Declared declared = classify(decl, body);
        record(declared, exported);
        decl.clear();
        i = end;
        if (!declared.function) {  // the declaration goes on to its `;`
          while (i < t.size() && t[i] != ";" && t[i] != "}")
            i = (t[i] == "(" || t[i] == "[" || t[i] == "{") ? skip_group(t, i) : i + 1;
          if (i < t.size() && t[i] == ";") ++i;
        }
      }
    } else {
      decl.push_back(x);
      ++i;
    }
  }
  return found;
}

struct PublicApi {
  std::vector<std::string> modules;                 // the modules `import karx;` brings in, partitions included
  std::map<std::string, std::set<fs::path>> names;  // qualified name -> files declaring it
};

// The interface units under modules/ and impl/ that `import karx;` reaches, and their names.
PublicApi public_api(const fs::path& root) {
  std::map<std::string, std::vector<Unit>> by_module;
  for (const char* dir : {"modules", "impl"})
    for (const auto& entry : fs::recursive_directory_iterator(root / dir))
      if (entry.is_regular_file() && entry.path().extension() == ".cppm") {
        Unit u = read_unit(entry.path());
        if (!u.module.empty()) by_module[u.module].push_back(std::move(u));
      }
  PublicApi api;
  std::set<std::string> seen;
  std::vector<std::string> todo{"karx"};
  while (!todo.empty()) {
    const std::string m = todo.back();
    todo.pop_back();
    // karx.machinery is internal even if something were to re-export it.
    if (m.rfind("karx.machinery", 0) == 0 || !seen.insert(m).second || !by_module.count(m)) continue;
    api.modules.push_back(m);
    for (const Unit& u : by_module[m]) {
      for (const std::string& next : u.reexports) todo.push_back(next);
      for (const std::string& name : exported_names(u)) api.names[name].insert(u.file);
    }
  }
  std::sort(api.modules.begin(), api.modules.end());
  return api;
}

std::string join(const std::vector<std::string>& items, const char* sep) {
  std::string out;
  for (const std::string& item : items) out += (out.empty() ? "" : sep) + item;
  return out;
}

// True if `doc` contains "`<qualified>" not followed by an identifier character.
bool mentions(const std::string& doc, const std::string& qualified) {
  const std::string needle = "`" + qualified;
  for (std::size_t at = doc.find(needle); at != std::string::npos; at = doc.find(needle, at + 1)) {
    const std::size_t after = at + needle.size();
    if (after == doc.size() || !ident_char(doc[after])) return true;
  }
  return false;
}

const fs::path kRoot = KARX_SOURCE_DIR;

// --- Tests ----------------------------------------------------------------------------------

TEST(ApiExtractor, ReadsTrickyDeclarations) {
  Unit u{"tricky.cppm", "m", {}, tokenize(R"src(
module;
#include <vector>
#define BRACE {
export module m;
namespace karx { struct Hidden {}; export struct Shown; template <class T> T hidden(T); export template <class T> T shown(T); }
export namespace karx {
// class Commented {};  /* struct AlsoCommented { */
inline constexpr const char* text = "namespace x { struct InString; }";
template <class T = void, int N = (1 > 2)>
  requires(sizeof(T) > 0) && std::is_object_v<T>
class Tpl final : public Base<T> { void member(); struct Nested {}; };
template <class F> concept Conc = requires(F& f) { { f.poll() }; } && detail::is_poll<decltype(f)>;
template <class T> using Alias = std::vector<T>;
using detail::Imported;
using Fn = void (*)(int) noexcept;
template <class V> constexpr Poll<std::decay_t<V>> make(V&& v) { return {}; }
auto trailing(int x = {}) -> std::pair<int, int>;
inline constexpr Thing var{0};
Kind plain = Kind::a;
enum Unscoped { first_enumerator = 1, second_enumerator };
enum class Scoped : int { not_a_name };
bool operator==(const Tpl<>&, const Tpl<>&);
inline bool operator!=(const Tpl<>&, const Tpl<>&) { return false; }
void Outside::member() {}
namespace detail { struct Internal {}; }
namespace sub { struct InSub {}; }
inline namespace v1 { void in_inline(); }
}
export namespace karx::detail { void internal_too(); }
namespace { export void anonymous(); }
export { namespace karx { void from_block(); } }
)src")};
  const std::set<std::string> names = exported_names(u);
  const std::set<std::string> expected{"karx::Shown",
                                       "karx::shown",
                                       "karx::text",
                                       "karx::Tpl",
                                       "karx::Conc",
                                       "karx::Alias",
                                       "karx::Imported",
                                       "karx::Fn",
                                       "karx::make",
                                       "karx::trailing",
                                       "karx::var",
                                       "karx::plain",
                                       "karx::Unscoped",
                                       "karx::first_enumerator",
                                       "karx::second_enumerator",
                                       "karx::Scoped",
                                       "karx::sub::InSub",
                                       "karx::in_inline",
                                       "karx::from_block"};
  EXPECT_EQ(names, expected) << "extracted: " << join({names.begin(), names.end()}, ", ");
}

TEST(ApiExtractor, FindsTheKnownPublicNamesAndNoInternalOnes) {
  const PublicApi api = public_api(kRoot);
  const std::string modules = join(api.modules, ", ");
  for (const char* m : {"karx", "karx.waker", "karx.waker:poll", "karx.task", "karx.task:spawn", "karx.executor",
                        "karx.executor:runtime"})
    EXPECT_NE(std::find(api.modules.begin(), api.modules.end(), m), api.modules.end())
        << m << " is not reached from `karx`: " << modules;
  for (const auto& m : api.modules) EXPECT_NE(m.rfind("karx.machinery", 0), 0u) << m;

  // The normative API of DESIGN.md: if these are not found, the extractor is broken.
  for (const char* name :
       {"Poll",           "pending",    "ready",          "Waker",       "RawWaker",       "RawWakerVTable",
        "Context",        "waker_fn",   "noop_waker",     "Future",      "output_of",      "Async",
        "Task",           "JoinHandle", "spawn",          "spawn_local", "foreign_thread", "RuntimeOptions",
        "RuntimeMetrics", "Runtime",    "global_runtime", "exec",        "block_on",       "blocking",
        "yield_now",      "sleep_for",  "sleep_until"})
    EXPECT_TRUE(api.names.count(std::string("karx::") + name)) << "karx::" << name << " was not extracted";
  // Internal names that exist in those files (karx::detail, karx.machinery) must not be.
  for (const char* name : {"timer_pending_count", "trim_task_cache", "set_allocation_observer", "test_slab_stats",
                           "is_poll", "AsyncPoll", "AsyncCell", "SlabPage", "WakerFnBlock", "RuntimeCore", "Injector",
                           "RunQueue", "Parker", "PollWord", "Header"}) {
    EXPECT_FALSE(api.names.count(std::string("karx::") + name)) << "karx::" << name;
    EXPECT_FALSE(api.names.count(std::string("karx::detail::") + name)) << "karx::detail::" << name;
  }
  for (const auto& [name, files] : api.names) EXPECT_EQ(name.find("::detail::"), std::string::npos) << name;
}

TEST(ApiDoc, EveryExportedNameIsDocumented) {
  const std::string doc = read_file(kRoot / "docs" / "api.md");
  ASSERT_FALSE(doc.empty()) << "docs/api.md is missing or empty";
  const PublicApi api = public_api(kRoot);
  ASSERT_GE(api.names.size(), 20u) << "too few names extracted: the extractor is broken";
  std::vector<std::string> missing;
  for (const auto& [name, files] : api.names)
    if (!mentions(doc, name)) {
      std::string where;
      for (const fs::path& f : files) where += (where.empty() ? "" : ", ") + fs::relative(f, kRoot).string();
      missing.push_back(name + "  (" + where + ")");
    }
  EXPECT_TRUE(missing.empty()) << "docs/api.md does not document these exported names (write each as `"
                               << "karx::Name` with its contract):\n  " << join(missing, "\n  ");
}

// The other way round: a name docs/api.md writes as `karx::...` must still exist.
TEST(ApiDoc, EveryDocumentedNameExists) {
  const std::string doc = read_file(kRoot / "docs" / "api.md");
  const PublicApi api = public_api(kRoot);
  auto is_namespace = [&](const std::string& ns) {
    return std::any_of(api.names.begin(), api.names.end(),
                       [&](const auto& entry) { return entry.first.rfind(ns + "::", 0) == 0; });
  };
  std::set<std::string> stale;
  const std::string marker = "`karx::";
  for (std::size_t at = doc.find(marker); at != std::string::npos; at = doc.find(marker, at + 1)) {
    std::string scope = "karx";
    std::size_t k = at + marker.size();
    for (;;) {
      std::size_t end = k;
      while (end < doc.size() && ident_char(doc[end])) ++end;
      const std::string part = doc.substr(k, end - k);
      if (part.empty() || part == "detail") break;
      const std::string name = scope + "::" + part;
      if (api.names.count(name)) break;
      if (!is_namespace(name)) {
        stale.insert(name);
        break;
      }
      if (doc.compare(end, 2, "::") != 0) break;  // `karx::sim` alone names the namespace
      scope = name;
      k = end + 2;
    }
  }
  EXPECT_TRUE(stale.empty()) << "docs/api.md documents names that no public module exports:\n  "
                             << join({stale.begin(), stale.end()}, "\n  ");
}

}  // namespace
