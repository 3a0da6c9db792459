#include "image/jpeg_render.h"

#include <csetjmp>
#include <cstdio>
#include <cstring>
#include <stdexcept>
#include <string>

#ifdef SDTUNE_WITH_JPEG
#include <jpeglib.h>
#endif

namespace sdtune::image {

namespace {

uint32_t read16(const uint8_t* p, bool little) {
  return little ? p[0] | (p[1] << 8) : (p[0] << 8) | p[1];
}

uint32_t read32(const uint8_t* p, bool little) {
  return little ? read16(p, true) | (read16(p + 2, true) << 16) : (read16(p, false) << 16) | read16(p + 2, false);
}

#ifdef SDTUNE_WITH_JPEG

// The stored pixel shown at oriented (x, y) under EXIF orientation 1..8; ws x hs is the stored size.
inline void storedPixel(int orientation, int x, int y, int ws, int hs, int& sx, int& sy) {
  switch (orientation) {
    case 2: sx = ws - 1 - x, sy = y; break;
    case 3: sx = ws - 1 - x, sy = hs - 1 - y; break;
    case 4: sx = x, sy = hs - 1 - y; break;
    case 5: sx = y, sy = x; break;
    case 6: sx = y, sy = hs - 1 - x; break;
    case 7: sx = ws - 1 - y, sy = hs - 1 - x; break;
    case 8: sx = ws - 1 - y, sy = x; break;
    default: sx = x, sy = y;
  }
}

// An ICC profile that describes sRGB: sharp's transform to sRGB would be (nearly) the identity.
// Looks for "sRGB" in the 'desc' tag (ICC v2 ASCII, or v4 'mluc' UTF-16BE) of the first chunk.
bool isSrgbProfile(const uint8_t* p, size_t n) {
  if (n < 132) return false;
  const uint32_t tags = read32(p + 128, false);
  for (uint32_t i = 0; i < tags && 132 + (i + 1) * 12 <= n; ++i) {
    const uint8_t* e = p + 132 + i * 12;
    if (std::memcmp(e, "desc", 4) != 0) continue;
    const size_t offset = read32(e + 4, false), size = read32(e + 8, false);
    if (offset > n || size > n - offset) return false;
    std::string text;
    for (size_t k = 0; k < size; ++k) {
      if (p[offset + k] != 0) text.push_back(static_cast<char>(p[offset + k]));  // drops UTF-16's high bytes
    }
    return text.find("sRGB") != std::string::npos;
  }
  return false;
}

struct ErrorManager {
  jpeg_error_mgr pub;
  std::jmp_buf jump;
  bool warned;
};

void onError(j_common_ptr c) {
  std::longjmp(reinterpret_cast<ErrorManager*>(c->err)->jump, 1);
}

void onMessage(j_common_ptr c, int level) {
  if (level < 0) reinterpret_cast<ErrorManager*>(c->err)->warned = true;  // corrupt data: sharp decides
}

struct Decoded {
  std::vector<uint8_t> rgb;
  int width = 0, height = 0;  // decoded (scaled) size
  int orientation = 1;
};

// Orientation from APP1; false for what sharp must handle (colour management, CMYK, the limit).
bool inspect(jpeg_decompress_struct& cinfo, const JpegRenderJob& job, int& orientation) {
  if (job.maxPixels > 0 && int64_t(cinfo.image_width) * cinfo.image_height > job.maxPixels) return false;
  if (cinfo.jpeg_color_space != JCS_YCbCr && cinfo.jpeg_color_space != JCS_GRAYSCALE &&
      cinfo.jpeg_color_space != JCS_RGB) {
    return false;
  }
  for (jpeg_saved_marker_ptr m = cinfo.marker_list; m; m = m->next) {
    if (m->marker == JPEG_APP0 + 1 && orientation == 1) orientation = exifOrientation(m->data, m->data_length);
    if (m->marker == JPEG_APP0 + 2 && m->data_length > 14 && std::memcmp(m->data, "ICC_PROFILE", 12) == 0 &&
        !isSrgbProfile(m->data + 14, m->data_length - 14)) {
      return false;
    }
  }
  return true;
}

// Decodes at the smallest scale (of 1/8 ... 4/8, 8/8) whose size covers the stored-orientation resize target.
bool decodeScaled(const uint8_t* data, size_t size, const JpegRenderJob& job, Decoded& out) {
  jpeg_decompress_struct cinfo;
  ErrorManager err;
  cinfo.err = jpeg_std_error(&err.pub);
  err.pub.error_exit = onError;
  err.pub.emit_message = onMessage;
  err.warned = false;
  if (setjmp(err.jump)) {
    jpeg_destroy_decompress(&cinfo);
    return false;
  }
  jpeg_create_decompress(&cinfo);
  jpeg_mem_src(&cinfo, data, static_cast<unsigned long>(size));
  jpeg_save_markers(&cinfo, JPEG_APP0 + 1, 0xFFFF);
  jpeg_save_markers(&cinfo, JPEG_APP0 + 2, 0xFFFF);
  jpeg_read_header(&cinfo, TRUE);
  if (!inspect(cinfo, job, out.orientation)) {
    jpeg_destroy_decompress(&cinfo);
    return false;
  }
  const bool swap = out.orientation >= 5;
  const unsigned targetW = swap ? job.resizedHeight : job.resizedWidth;
  const unsigned targetH = swap ? job.resizedWidth : job.resizedHeight;
  cinfo.out_color_space = JCS_RGB;
  // 5/8 to 7/8 use plain C inverse DCTs and took longer than the SIMD full-size decode (measured on
  // 2-3 MP photos); 1/8 to 4/8 save 25-45% of it (the entropy decoding is paid at every scale).
  for (unsigned m : {1u, 2u, 3u, 4u, 8u}) {
    cinfo.scale_num = m;
    cinfo.scale_denom = 8;
    jpeg_calc_output_dimensions(&cinfo);
    if (cinfo.output_width >= targetW && cinfo.output_height >= targetH) break;
  }
  jpeg_start_decompress(&cinfo);
  out.width = static_cast<int>(cinfo.output_width);
  out.height = static_cast<int>(cinfo.output_height);
  out.rgb.resize(size_t(out.width) * out.height * 3);
  while (cinfo.output_scanline < cinfo.output_height) {
    JSAMPROW row = out.rgb.data() + size_t(cinfo.output_scanline) * out.width * 3;
    jpeg_read_scanlines(&cinfo, &row, 1);
  }
  jpeg_finish_decompress(&cinfo);
  jpeg_destroy_decompress(&cinfo);
  return !err.warned;
}

#endif

}  // namespace

int exifOrientation(const uint8_t* p, size_t n) {
  if (n < 14 || std::memcmp(p, "Exif\0\0", 6) != 0) return 1;
  const uint8_t* tiff = p + 6;
  const size_t size = n - 6;
  const bool little = tiff[0] == 'I' && tiff[1] == 'I';
  if (!little && !(tiff[0] == 'M' && tiff[1] == 'M')) return 1;
  if (read16(tiff + 2, little) != 42) return 1;
  const size_t ifd = read32(tiff + 4, little);
  if (ifd + 2 > size) return 1;
  const uint32_t count = read16(tiff + ifd, little);
  for (uint32_t i = 0; i < count; ++i) {
    const size_t e = ifd + 2 + size_t(i) * 12;
    if (e + 12 > size) return 1;
    if (read16(tiff + e, little) != 0x0112) continue;
    const uint32_t value = read16(tiff + e + 8, little);  // type SHORT, count 1: in the value field
    return read16(tiff + e + 2, little) == 3 && value >= 1 && value <= 8 ? static_cast<int>(value) : 1;
  }
  return 1;
}

bool jpegAvailable() {
#ifdef SDTUNE_WITH_JPEG
  return true;
#else
  return false;
#endif
}

std::optional<std::vector<uint8_t>> renderJpeg(const uint8_t* data, size_t size, const JpegRenderJob& job) {
  if (job.width <= 0 || job.height <= 0 || job.left < 0 || job.top < 0 || job.left + job.width > job.resizedWidth ||
      job.top + job.height > job.resizedHeight) {
    throw std::invalid_argument("renderJpeg: the crop lies outside the resized image");
  }
#ifdef SDTUNE_WITH_JPEG
  Decoded decoded;
  if (!decodeScaled(data, size, job, decoded)) return std::nullopt;
  const bool swap = decoded.orientation >= 5;
  const int ws = swap ? job.resizedHeight : job.resizedWidth;  // the resize, in stored orientation
  const int hs = swap ? job.resizedWidth : job.resizedHeight;
  std::vector<uint8_t> resized(size_t(ws) * hs * 3);
  resample8(decoded.rgb.data(), decoded.width, decoded.height, 3, resized.data(), ws, hs, job.filter);
  // Orientation, crop and flip in one gather: output (x, y) is oriented (left + x', top + y).
  std::vector<uint8_t> out(size_t(job.width) * job.height * 3);
  uint8_t* dst = out.data();
  for (int y = 0; y < job.height; ++y) {
    for (int x = 0; x < job.width; ++x, dst += 3) {
      int sx, sy;
      storedPixel(decoded.orientation, job.left + (job.flip ? job.width - 1 - x : x), job.top + y, ws, hs, sx, sy);
      std::memcpy(dst, resized.data() + (size_t(sy) * ws + sx) * 3, 3);
    }
  }
  return out;
#else
  (void)data;
  (void)size;
  return std::nullopt;
#endif
}

}  // namespace sdtune::image
