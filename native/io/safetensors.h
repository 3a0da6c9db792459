// safetensors files: a strict header check, lazy mmap-backed reads, atomic writes.
// Format: u64-LE header length N, N bytes of JSON, then the raw little-endian data.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace sdtune::safetensors {

struct TensorInfo {
  std::string name;
  std::string dtype;  // as written in the file: "F32", "BF16", ...
  std::vector<int64_t> shape;
  uint64_t begin = 0;  // offsets relative to the start of the data area
  uint64_t end = 0;
};

struct Header {
  std::vector<TensorInfo> tensors;  // in file order of data offsets
  std::map<std::string, std::string> metadata;
  uint64_t headerSize = 0;  // N
  uint64_t fileSize = 0;
};

// Parses and validates everything about a header before any tensor is touched.
// `where` names the file in error messages.
Header parseHeader(const char* json, size_t size, uint64_t fileSize, const std::string& where);

// Reads and validates only the header (no mmap).
Header inspect(const std::string& path);

// A read-only (copy-on-write) mapping of a whole file, shared by every tensor
// made from it: the mapping lives until the last such tensor is freed.
class MappedFile {
 public:
  static std::shared_ptr<MappedFile> open(const std::string& path);
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const std::string& path() const { return path_; }
  const Header& header() const { return header_; }
  // A CPU tensor over the mapped bytes (copied only when misaligned for its dtype).
  at::Tensor tensor(const TensorInfo& info);
  at::Tensor tensor(const std::string& name);

 private:
  MappedFile() = default;
  std::string path_;
  Header header_;
  std::map<std::string, size_t> index_;
  char* base_ = nullptr;  // start of the mapping
  size_t size_ = 0;
  std::weak_ptr<MappedFile> self_;
};

// Maps a safetensors dtype name to libtorch's; throws a clear error for F8 and
// other types this build cannot hold.
at::ScalarType toScalarType(const std::string& dtype, const std::string& where);
std::string fromScalarType(at::ScalarType type);
size_t dtypeSize(const std::string& dtype);

// Writes tensors (any device, any layout) and metadata to a temp file beside
// `path`, fsyncs it and renames it into place, so readers never see half a file.
void write(const std::string& path, const std::vector<std::pair<std::string, at::Tensor>>& tensors,
           const std::map<std::string, std::string>& metadata);

// Writes bytes atomically (temp file + fsync + rename + directory fsync).
void writeFileAtomic(const std::string& path, const std::vector<std::pair<const char*, size_t>>& pieces);

}  // namespace sdtune::safetensors
