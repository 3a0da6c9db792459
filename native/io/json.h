// A small, strict JSON reader and writer for safetensors headers and configs that
// cross the boundary as text. Objects keep their key order and their duplicates,
// so callers can refuse duplicate names instead of silently keeping one.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace sdtune::json {

struct ParseError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

struct Value {
  enum class Kind { Null, Bool, Number, String, Array, Object };
  Kind kind = Kind::Null;
  bool boolean = false;
  double number = 0;
  // Set when the number was written as a non-negative integer that fits uint64.
  bool isUnsigned = false;
  uint64_t unsignedValue = 0;
  std::string string;
  std::vector<Value> array;
  std::vector<std::pair<std::string, Value>> object;

  bool isObject() const { return kind == Kind::Object; }
  bool isArray() const { return kind == Kind::Array; }
  bool isString() const { return kind == Kind::String; }
  bool isNumber() const { return kind == Kind::Number; }
  // First member with this key, or nullptr.
  const Value* find(const std::string& key) const;
};

// Parses a whole document; trailing non-space text is an error. Nesting is
// limited so hostile input cannot exhaust the stack.
Value parse(const char* data, size_t size, int maxDepth = 64);
inline Value parse(const std::string& text) {
  return parse(text.data(), text.size());
}

// Writes a JSON string literal (with quotes), escaping as RFC 8259 requires.
void appendQuoted(std::string& out, const std::string& text);

}  // namespace sdtune::json
