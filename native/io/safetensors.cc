#include "io/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <random>
#include <set>
#include <stdexcept>

#include "io/json.h"

namespace sdtune::safetensors {

namespace {

// The reference implementation refuses headers over 100 MB; so do we.
constexpr uint64_t kMaxHeaderSize = 100'000'000;

[[noreturn]] void fail(const std::string& where, const std::string& what) {
  throw std::runtime_error("safetensors: " + where + ": " + what);
}

std::string errnoText() {
  return std::strerror(errno);
}

struct Fd {
  int fd = -1;
  ~Fd() {
    if (fd >= 0) ::close(fd);
  }
};

void readExactly(int fd, char* out, size_t size, uint64_t offset, const std::string& where) {
  size_t done = 0;
  while (done < size) {
    ssize_t n = ::pread(fd, out + done, size - done, static_cast<off_t>(offset + done));
    if (n < 0) {
      if (errno == EINTR) continue;
      fail(where, "read failed: " + errnoText());
    }
    if (n == 0) fail(where, "file ended early (truncated?)");
    done += static_cast<size_t>(n);
  }
}

uint64_t readU64LE(const unsigned char* b) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | b[i];
  return v;
}

// Reads the first 8 bytes and checks the header length against the file size.
uint64_t checkedHeaderSize(const unsigned char* first8, uint64_t fileSize, const std::string& where) {
  if (fileSize < 8) fail(where, "file is " + std::to_string(fileSize) + " bytes, too short for a header length");
  uint64_t n = readU64LE(first8);
  if (n > kMaxHeaderSize) fail(where, "header length " + std::to_string(n) + " is absurdly large (limit 100 MB)");
  if (n > fileSize - 8) {
    fail(where, "header length " + std::to_string(n) + " runs past the end of the file (" + std::to_string(fileSize) +
                    " bytes); the file is truncated or not safetensors");
  }
  if (n < 2) fail(where, "header length " + std::to_string(n) + " is too small for a JSON object");
  return n;
}

}  // namespace

size_t dtypeSize(const std::string& d) {
  if (d == "F64" || d == "I64" || d == "U64") return 8;
  if (d == "F32" || d == "I32" || d == "U32") return 4;
  if (d == "F16" || d == "BF16" || d == "I16" || d == "U16") return 2;
  if (d == "I8" || d == "U8" || d == "BOOL" || d == "F8_E4M3" || d == "F8_E5M2") return 1;
  return 0;
}

at::ScalarType toScalarType(const std::string& d, const std::string& where) {
  if (d == "F64") return at::kDouble;
  if (d == "F32") return at::kFloat;
  if (d == "F16") return at::kHalf;
  if (d == "BF16") return at::kBFloat16;
  if (d == "I64") return at::kLong;
  if (d == "I32") return at::kInt;
  if (d == "I16") return at::kShort;
  if (d == "I8") return at::kChar;
  if (d == "U8") return at::kByte;
  if (d == "BOOL") return at::kBool;
  if (d == "F8_E4M3" || d == "F8_E5M2") {
    fail(where, "dtype " + d + " (8-bit float) is unsupported: convert the file to F16/BF16/F32 first");
  }
  if (d == "U16" || d == "U32" || d == "U64") {
    fail(where, "dtype " + d + " is unsupported by this libtorch; convert the tensor to a signed type");
  }
  fail(where, "unknown dtype \"" + d + "\"");
}

std::string fromScalarType(at::ScalarType t) {
  switch (t) {
    case at::kDouble: return "F64";
    case at::kFloat: return "F32";
    case at::kHalf: return "F16";
    case at::kBFloat16: return "BF16";
    case at::kLong: return "I64";
    case at::kInt: return "I32";
    case at::kShort: return "I16";
    case at::kChar: return "I8";
    case at::kByte: return "U8";
    case at::kBool: return "BOOL";
    default: throw std::runtime_error(std::string("safetensors: cannot store dtype ") + c10::toString(t));
  }
}

Header parseHeader(const char* text, size_t size, uint64_t fileSize, const std::string& where) {
  json::Value root;
  try {
    root = json::parse(text, size);
  } catch (const json::ParseError& e) {
    fail(where, std::string("header is not valid JSON (") + e.what() + ")");
  }
  if (!root.isObject()) fail(where, "header must be a JSON object");

  Header header;
  header.headerSize = size;
  header.fileSize = fileSize;
  const uint64_t dataSize = fileSize - 8 - size;
  std::set<std::string> seen;
  for (const auto& [name, entry] : root.object) {
    if (!seen.insert(name).second) fail(where, "duplicate tensor name \"" + name + "\"");
    if (name == "__metadata__") {
      if (!entry.isObject()) fail(where, "__metadata__ must be an object of strings");
      for (const auto& [key, value] : entry.object) {
        if (!value.isString()) fail(where, "__metadata__[\"" + key + "\"] must be a string");
        header.metadata[key] = value.string;
      }
      continue;
    }
    const std::string at = "tensor \"" + name + "\"";
    if (!entry.isObject()) fail(where, at + ": entry must be an object");
    const json::Value* dtype = entry.find("dtype");
    const json::Value* shape = entry.find("shape");
    const json::Value* offsets = entry.find("data_offsets");
    if (!dtype || !dtype->isString()) fail(where, at + ": missing string \"dtype\"");
    if (!shape || !shape->isArray()) fail(where, at + ": missing array \"shape\"");
    if (!offsets || !offsets->isArray() || offsets->array.size() != 2) {
      fail(where, at + ": \"data_offsets\" must be [begin, end]");
    }
    TensorInfo info;
    info.name = name;
    info.dtype = dtype->string;
    size_t elementSize = dtypeSize(info.dtype);
    if (elementSize == 0) fail(where, at + ": unknown dtype \"" + info.dtype + "\"");
    uint64_t count = 1;
    bool overflow = false;
    for (const auto& dim : shape->array) {
      if (!dim.isNumber() || !dim.isUnsigned || dim.unsignedValue > static_cast<uint64_t>(INT64_MAX)) {
        fail(where, at + ": shape entries must be non-negative integers");
      }
      info.shape.push_back(static_cast<int64_t>(dim.unsignedValue));
      if (dim.unsignedValue != 0 && count > UINT64_MAX / dim.unsignedValue) overflow = true;
      count *= dim.unsignedValue;
    }
    for (const auto& o : offsets->array) {
      if (!o.isNumber() || !o.isUnsigned) fail(where, at + ": data_offsets must be non-negative integers");
    }
    info.begin = offsets->array[0].unsignedValue;
    info.end = offsets->array[1].unsignedValue;
    if (info.begin > info.end) fail(where, at + ": data_offsets begin > end");
    if (info.end > dataSize) {
      fail(where, at + ": data_offsets [" + std::to_string(info.begin) + ", " + std::to_string(info.end) +
                      "] lie outside the data area (" + std::to_string(dataSize) + " bytes)");
    }
    if (overflow || count > UINT64_MAX / elementSize || count * elementSize != info.end - info.begin) {
      fail(where, at + ": shape/byte mismatch: " + std::to_string(info.end - info.begin) + " bytes for " +
                      (overflow ? std::string("an overflowing number of") : std::to_string(count)) + " " + info.dtype +
                      " elements");
    }
    header.tensors.push_back(std::move(info));
  }
  // The data area must be tiled exactly: no overlaps, no gaps, nothing trailing.
  std::stable_sort(header.tensors.begin(), header.tensors.end(), [](const TensorInfo& a, const TensorInfo& b) {
    return a.begin < b.begin || (a.begin == b.begin && a.end < b.end);
  });
  uint64_t cursor = 0;
  for (const auto& t : header.tensors) {
    if (t.begin < cursor) fail(where, "tensor \"" + t.name + "\" overlaps the tensor before it");
    if (t.begin > cursor)
      fail(where, "gap of " + std::to_string(t.begin - cursor) + " bytes before tensor \"" + t.name + "\"");
    cursor = t.end;
  }
  if (cursor != dataSize) {
    fail(where, std::to_string(dataSize - cursor) + " bytes after the last tensor are not described by the header");
  }
  return header;
}

Header inspect(const std::string& path) {
  Fd f;
  f.fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (f.fd < 0) fail(path, "cannot open: " + errnoText());
  struct stat st {};
  if (::fstat(f.fd, &st) != 0) fail(path, "cannot stat: " + errnoText());
  if (!S_ISREG(st.st_mode)) fail(path, "not a regular file");
  uint64_t fileSize = static_cast<uint64_t>(st.st_size);
  unsigned char first8[8] = {0};
  if (fileSize >= 8) readExactly(f.fd, reinterpret_cast<char*>(first8), 8, 0, path);
  uint64_t n = checkedHeaderSize(first8, fileSize, path);
  std::string text(n, '\0');
  readExactly(f.fd, text.data(), n, 8, path);
  return parseHeader(text.data(), n, fileSize, path);
}

std::shared_ptr<MappedFile> MappedFile::open(const std::string& path) {
  std::shared_ptr<MappedFile> file(new MappedFile());
  file->path_ = path;
  file->self_ = file;
  Fd f;
  f.fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (f.fd < 0) fail(path, "cannot open: " + errnoText());
  struct stat st {};
  if (::fstat(f.fd, &st) != 0) fail(path, "cannot stat: " + errnoText());
  if (!S_ISREG(st.st_mode)) fail(path, "not a regular file");
  uint64_t fileSize = static_cast<uint64_t>(st.st_size);
  unsigned char first8[8] = {0};
  if (fileSize >= 8) readExactly(f.fd, reinterpret_cast<char*>(first8), 8, 0, path);
  uint64_t n = checkedHeaderSize(first8, fileSize, path);
  // Private + writable: pages are copy-on-write, so an in-place op on a loaded
  // tensor changes memory, never the file, and never faults.
  void* base = ::mmap(nullptr, fileSize, PROT_READ | PROT_WRITE, MAP_PRIVATE, f.fd, 0);
  if (base == MAP_FAILED) fail(path, "mmap failed: " + errnoText());
  file->base_ = static_cast<char*>(base);
  file->size_ = fileSize;
  file->header_ = parseHeader(file->base_ + 8, n, fileSize, path);
  for (size_t i = 0; i < file->header_.tensors.size(); ++i) file->index_[file->header_.tensors[i].name] = i;
  return file;
}

MappedFile::~MappedFile() {
  if (base_) ::munmap(base_, size_);
}

at::Tensor MappedFile::tensor(const std::string& name) {
  auto it = index_.find(name);
  if (it == index_.end()) fail(path_, "no tensor named \"" + name + "\"");
  return tensor(header_.tensors[it->second]);
}

at::Tensor MappedFile::tensor(const TensorInfo& info) {
  auto type = toScalarType(info.dtype, path_ + ": tensor \"" + info.name + "\"");
  auto options = at::TensorOptions().dtype(type);
  char* data = base_ + 8 + header_.headerSize + info.begin;
  size_t bytes = info.end - info.begin;
  if (bytes == 0) return at::empty(info.shape, options);
  if (reinterpret_cast<uintptr_t>(data) % dtypeSize(info.dtype) != 0) {
    auto out = at::empty(info.shape, options);
    std::memcpy(out.data_ptr(), data, bytes);
    return out;
  }
  // Each view holds the mapping alive through the shared pointer in its deleter.
  auto keepAlive = self_.lock();
  return at::from_blob(
      data, info.shape, [keepAlive](void*) mutable { keepAlive.reset(); }, options);
}

void writeFileAtomic(const std::string& path, const std::vector<std::pair<const char*, size_t>>& pieces) {
  std::random_device rd;
  std::string tmp = path + ".tmp-" + std::to_string(::getpid()) + "-" + std::to_string(rd());
  Fd f;
  f.fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (f.fd < 0) fail(path, "cannot create " + tmp + ": " + errnoText());
  try {
    for (const auto& [data, size] : pieces) {
      size_t done = 0;
      while (done < size) {
        ssize_t n = ::write(f.fd, data + done, size - done);
        if (n < 0) {
          if (errno == EINTR) continue;
          fail(path, "write failed: " + errnoText());
        }
        done += static_cast<size_t>(n);
      }
    }
    if (::fsync(f.fd) != 0) fail(path, "fsync failed: " + errnoText());
    ::close(f.fd);
    f.fd = -1;
    if (::rename(tmp.c_str(), path.c_str()) != 0) fail(path, "rename failed: " + errnoText());
  } catch (...) {
    ::unlink(tmp.c_str());
    throw;
  }
  // Make the rename itself durable.
  std::string dir = path.substr(0, path.find_last_of('/') == std::string::npos ? 0 : path.find_last_of('/'));
  Fd d;
  d.fd = ::open(dir.empty() ? "." : dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (d.fd >= 0) ::fsync(d.fd);
}

void write(const std::string& path, const std::vector<std::pair<std::string, at::Tensor>>& tensors,
           const std::map<std::string, std::string>& metadata) {
  struct Item {
    std::string name;
    at::Tensor data;  // contiguous CPU
    std::string dtype;
  };
  std::vector<Item> items;
  std::set<std::string> names;
  for (const auto& [name, t] : tensors) {
    if (name == "__metadata__") fail(path, "\"__metadata__\" is reserved and cannot name a tensor");
    if (!names.insert(name).second) fail(path, "duplicate tensor name \"" + name + "\"");
    if (!t.defined()) fail(path, "tensor \"" + name + "\" is undefined (disposed?)");
    items.push_back({name, t.detach().to(at::kCPU).contiguous(), fromScalarType(t.scalar_type())});
  }
  // Same order as the reference writers: larger dtypes first, then by name, so data stays aligned.
  std::stable_sort(items.begin(), items.end(), [](const Item& a, const Item& b) {
    size_t sa = dtypeSize(a.dtype), sb = dtypeSize(b.dtype);
    return sa != sb ? sa > sb : a.name < b.name;
  });
  std::string header = "{";
  bool first = true;
  if (!metadata.empty()) {
    header += "\"__metadata__\":{";
    for (auto it = metadata.begin(); it != metadata.end(); ++it) {
      if (it != metadata.begin()) header += ',';
      json::appendQuoted(header, it->first);
      header += ':';
      json::appendQuoted(header, it->second);
    }
    header += '}';
    first = false;
  }
  uint64_t offset = 0;
  for (const auto& item : items) {
    if (!first) header += ',';
    first = false;
    json::appendQuoted(header, item.name);
    header += ":{\"dtype\":\"" + item.dtype + "\",\"shape\":[";
    for (int64_t d = 0; d < item.data.dim(); ++d) {
      if (d) header += ',';
      header += std::to_string(item.data.size(d));
    }
    uint64_t bytes = item.data.nbytes();
    header += "],\"data_offsets\":[" + std::to_string(offset) + "," + std::to_string(offset + bytes) + "]}";
    offset += bytes;
  }
  header += '}';
  while (header.size() % 8 != 0) header += ' ';  // keeps the data area 8-byte aligned
  unsigned char lengthBytes[8];
  uint64_t n = header.size();
  for (int i = 0; i < 8; ++i) lengthBytes[i] = static_cast<unsigned char>((n >> (8 * i)) & 0xFF);

  std::vector<std::pair<const char*, size_t>> pieces;
  pieces.emplace_back(reinterpret_cast<const char*>(lengthBytes), 8);
  pieces.emplace_back(header.data(), header.size());
  for (const auto& item : items) {
    if (item.data.nbytes() > 0) pieces.emplace_back(static_cast<const char*>(item.data.data_ptr()), item.data.nbytes());
  }
  writeFileAtomic(path, pieces);
}

}  // namespace sdtune::safetensors
