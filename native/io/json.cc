#include "io/json.h"

#include <cmath>
#include <cstdlib>
#include <cstring>

namespace sdtune::json {

const Value* Value::find(const std::string& key) const {
  for (const auto& member : object) {
    if (member.first == key) return &member.second;
  }
  return nullptr;
}

namespace {

class Parser {
 public:
  Parser(const char* data, size_t size, int maxDepth) : p_(data), end_(data + size), maxDepth_(maxDepth) {}

  Value document() {
    skipSpace();
    Value v = value(0);
    skipSpace();
    if (p_ != end_) fail("unexpected text after the JSON value");
    return v;
  }

 private:
  const char* p_;
  const char* end_;
  const char* begin_ = p_;
  int maxDepth_;

  [[noreturn]] void fail(const std::string& what) {
    throw ParseError(what + " at byte " + std::to_string(p_ - begin_));
  }

  void skipSpace() {
    while (p_ < end_ && (*p_ == ' ' || *p_ == '\t' || *p_ == '\n' || *p_ == '\r')) ++p_;
  }

  bool consume(const char* word) {
    size_t n = std::strlen(word);
    if (static_cast<size_t>(end_ - p_) < n || std::memcmp(p_, word, n) != 0) return false;
    p_ += n;
    return true;
  }

  Value value(int depth) {
    if (depth > maxDepth_) fail("JSON nested too deeply");
    if (p_ >= end_) fail("unexpected end of JSON");
    Value v;
    switch (*p_) {
      case '{': return object(depth);
      case '[': return array(depth);
      case '"':
        v.kind = Value::Kind::String;
        v.string = string();
        return v;
      case 't':
        if (!consume("true")) fail("invalid literal");
        v.kind = Value::Kind::Bool;
        v.boolean = true;
        return v;
      case 'f':
        if (!consume("false")) fail("invalid literal");
        v.kind = Value::Kind::Bool;
        return v;
      case 'n':
        if (!consume("null")) fail("invalid literal");
        return v;
      default: return number();
    }
  }

  Value object(int depth) {
    Value v;
    v.kind = Value::Kind::Object;
    ++p_;  // '{'
    skipSpace();
    if (p_ < end_ && *p_ == '}') {
      ++p_;
      return v;
    }
    while (true) {
      skipSpace();
      if (p_ >= end_ || *p_ != '"') fail("expected a string key");
      std::string key = string();
      skipSpace();
      if (p_ >= end_ || *p_ != ':') fail("expected ':'");
      ++p_;
      skipSpace();
      v.object.emplace_back(std::move(key), value(depth + 1));
      skipSpace();
      if (p_ >= end_) fail("unexpected end of JSON object");
      if (*p_ == ',') {
        ++p_;
        continue;
      }
      if (*p_ == '}') {
        ++p_;
        return v;
      }
      fail("expected ',' or '}'");
    }
  }

  Value array(int depth) {
    Value v;
    v.kind = Value::Kind::Array;
    ++p_;  // '['
    skipSpace();
    if (p_ < end_ && *p_ == ']') {
      ++p_;
      return v;
    }
    while (true) {
      skipSpace();
      v.array.push_back(value(depth + 1));
      skipSpace();
      if (p_ >= end_) fail("unexpected end of JSON array");
      if (*p_ == ',') {
        ++p_;
        continue;
      }
      if (*p_ == ']') {
        ++p_;
        return v;
      }
      fail("expected ',' or ']'");
    }
  }

  static void appendUtf8(std::string& out, uint32_t cp) {
    if (cp < 0x80) {
      out += static_cast<char>(cp);
    } else if (cp < 0x800) {
      out += static_cast<char>(0xC0 | (cp >> 6));
      out += static_cast<char>(0x80 | (cp & 0x3F));
    } else if (cp < 0x10000) {
      out += static_cast<char>(0xE0 | (cp >> 12));
      out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
      out += static_cast<char>(0x80 | (cp & 0x3F));
    } else {
      out += static_cast<char>(0xF0 | (cp >> 18));
      out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
      out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
      out += static_cast<char>(0x80 | (cp & 0x3F));
    }
  }

  uint32_t hex4() {
    if (end_ - p_ < 4) fail("truncated \\u escape");
    uint32_t cp = 0;
    for (int i = 0; i < 4; ++i) {
      char c = *p_++;
      cp <<= 4;
      if (c >= '0' && c <= '9')
        cp |= c - '0';
      else if (c >= 'a' && c <= 'f')
        cp |= c - 'a' + 10;
      else if (c >= 'A' && c <= 'F')
        cp |= c - 'A' + 10;
      else
        fail("invalid \\u escape");
    }
    return cp;
  }

  // Checks one UTF-8 sequence starting at p_ and copies it.
  void utf8Char(std::string& out) {
    auto byte = static_cast<unsigned char>(*p_);
    int extra = byte < 0x80 ? 0 : (byte >> 5) == 0x6 ? 1 : (byte >> 4) == 0xE ? 2 : (byte >> 3) == 0x1E ? 3 : -1;
    if (extra < 0 || end_ - p_ < extra + 1) fail("invalid UTF-8 in string");
    for (int i = 1; i <= extra; ++i) {
      if ((static_cast<unsigned char>(p_[i]) & 0xC0) != 0x80) fail("invalid UTF-8 in string");
    }
    out.append(p_, extra + 1);
    p_ += extra + 1;
  }

  std::string string() {
    ++p_;  // '"'
    std::string out;
    while (true) {
      if (p_ >= end_) fail("unterminated string");
      char c = *p_;
      if (c == '"') {
        ++p_;
        return out;
      }
      if (static_cast<unsigned char>(c) < 0x20) fail("control character in string");
      if (c != '\\') {
        utf8Char(out);
        continue;
      }
      ++p_;
      if (p_ >= end_) fail("unterminated escape");
      char e = *p_++;
      switch (e) {
        case '"': out += '"'; break;
        case '\\': out += '\\'; break;
        case '/': out += '/'; break;
        case 'b': out += '\b'; break;
        case 'f': out += '\f'; break;
        case 'n': out += '\n'; break;
        case 'r': out += '\r'; break;
        case 't': out += '\t'; break;
        case 'u': {
          uint32_t cp = hex4();
          if (cp >= 0xD800 && cp <= 0xDBFF) {
            if (!consume("\\u")) fail("unpaired surrogate");
            uint32_t low = hex4();
            if (low < 0xDC00 || low > 0xDFFF) fail("unpaired surrogate");
            cp = 0x10000 + ((cp - 0xD800) << 10) + (low - 0xDC00);
          } else if (cp >= 0xDC00 && cp <= 0xDFFF) {
            fail("unpaired surrogate");
          }
          appendUtf8(out, cp);
          break;
        }
        default: fail("invalid escape");
      }
    }
  }

  Value number() {
    const char* start = p_;
    bool negative = false;
    if (p_ < end_ && *p_ == '-') {
      negative = true;
      ++p_;
    }
    if (p_ >= end_ || !(*p_ >= '0' && *p_ <= '9')) fail("invalid value");
    bool integral = true;
    uint64_t acc = 0;
    bool overflow = false;
    if (*p_ == '0') {
      ++p_;
    } else {
      while (p_ < end_ && *p_ >= '0' && *p_ <= '9') {
        uint64_t digit = static_cast<uint64_t>(*p_ - '0');
        if (acc > (UINT64_MAX - digit) / 10) overflow = true;
        acc = acc * 10 + digit;
        ++p_;
      }
    }
    if (p_ < end_ && *p_ == '.') {
      integral = false;
      ++p_;
      if (p_ >= end_ || !(*p_ >= '0' && *p_ <= '9')) fail("invalid number");
      while (p_ < end_ && *p_ >= '0' && *p_ <= '9') ++p_;
    }
    if (p_ < end_ && (*p_ == 'e' || *p_ == 'E')) {
      integral = false;
      ++p_;
      if (p_ < end_ && (*p_ == '+' || *p_ == '-')) ++p_;
      if (p_ >= end_ || !(*p_ >= '0' && *p_ <= '9')) fail("invalid number");
      while (p_ < end_ && *p_ >= '0' && *p_ <= '9') ++p_;
    }
    Value v;
    v.kind = Value::Kind::Number;
    v.number = std::strtod(std::string(start, p_).c_str(), nullptr);
    if (integral && !negative && !overflow) {
      v.isUnsigned = true;
      v.unsignedValue = acc;
    }
    return v;
  }
};

}  // namespace

Value parse(const char* data, size_t size, int maxDepth) {
  return Parser(data, size, maxDepth).document();
}

void appendQuoted(std::string& out, const std::string& text) {
  static const char* hex = "0123456789abcdef";
  out += '"';
  for (char c : text) {
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      case '\b': out += "\\b"; break;
      case '\f': out += "\\f"; break;
      default:
        if (static_cast<unsigned char>(c) < 0x20) {
          out += "\\u00";
          out += hex[(c >> 4) & 0xF];
          out += hex[c & 0xF];
        } else {
          out += c;
        }
    }
  }
  out += '"';
}

}  // namespace sdtune::json
