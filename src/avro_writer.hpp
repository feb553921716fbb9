// avro_writer.hpp: a direct Avro binary encoder (plain C++, no Postgres).
//
// Writes Avro binary encoding (zig-zag varints, length-prefixed bytes and
// strings, little-endian IEEE floats, union branch indexes, array blocks) into
// a growable buffer. The caller is responsible for writing values in the order
// and with the types of the writer schema.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>

namespace creek {

class AvroWriter {
public:
    void clear() { buf_.clear(); }
    const std::string &data() const { return buf_; }
    std::string &data() { return buf_; }
    size_t size() const { return buf_.size(); }

    void put_raw(const void *p, size_t n) { buf_.append(static_cast<const char *>(p), n); }
    void put_byte(uint8_t b) { buf_.push_back(static_cast<char>(b)); }

    void put_long(int64_t v) {
        uint64_t z = (static_cast<uint64_t>(v) << 1) ^ static_cast<uint64_t>(v >> 63);
        char tmp[10];
        int n = 0;
        while (z & ~0x7FULL) {
            tmp[n++] = static_cast<char>((z & 0x7F) | 0x80);
            z >>= 7;
        }
        tmp[n++] = static_cast<char>(z);
        buf_.append(tmp, n);
    }
    void put_int(int32_t v) { put_long(v); }
    void put_bool(bool v) { put_byte(v ? 1 : 0); }
    void put_float(float f) {
        uint32_t u;
        std::memcpy(&u, &f, 4);
        char b[4] = {char(u), char(u >> 8), char(u >> 16), char(u >> 24)};
        buf_.append(b, 4);
    }
    void put_double(double d) {
        uint64_t u;
        std::memcpy(&u, &d, 8);
        char b[8];
        for (int i = 0; i < 8; i++) b[i] = char(u >> (8 * i));
        buf_.append(b, 8);
    }
    void put_bytes(const void *p, size_t n) {
        put_long(static_cast<int64_t>(n));
        put_raw(p, n);
    }
    void put_string(const char *s, size_t n) { put_bytes(s, n); }
    void put_string(const std::string &s) { put_bytes(s.data(), s.size()); }
    void put_union_branch(int index) { put_long(index); }
    void put_enum(int index) { put_long(index); }
    // Arrays and maps: a block count before the items, then 0 to end.
    void put_array_block(size_t count) { put_long(static_cast<int64_t>(count)); }
    void put_array_end() { put_byte(0); }

private:
    std::string buf_;
};

}  // namespace creek
