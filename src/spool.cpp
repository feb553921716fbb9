// spool.cpp: see spool.hpp.
#include "spool.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <stdexcept>

namespace creek {
namespace {
constexpr size_t kBufSize = 1 << 20;
constexpr uint64_t kReleaseStep = 8 << 20;   // punch the read part out 8 MB at a time
}

Spool::Spool(const std::string &dir) {
#ifdef O_TMPFILE
    fd_ = ::open(dir.c_str(), O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
#endif
    if (fd_ < 0) {
        // no O_TMPFILE on this file system: create a unique file, unlink it
        std::string tmpl = dir + "/pgsql_tmp_creek_spool.XXXXXX";
        std::vector<char> name(tmpl.begin(), tmpl.end());
        name.push_back('\0');
        fd_ = ::mkostemp(name.data(), O_CLOEXEC);
        if (fd_ >= 0) ::unlink(name.data());
    }
    if (fd_ < 0) fail(("could not create a spool file in \"" + dir + "\"").c_str());
}

Spool::~Spool() {
    if (fd_ >= 0) ::close(fd_);
}

uint64_t Spool::allocated() const {
    struct stat sb;
    if (::fstat(fd_, &sb) != 0) fail("could not stat a spool file");
    return uint64_t(sb.st_blocks) * 512;
}

void Spool::fail(const char *what) const {
    throw std::runtime_error(std::string(what) + ": " + std::strerror(errno));
}

void Spool::write_out() {
    const char *p = buf_.data();
    size_t left = buf_.size();
    while (left > 0) {
        ssize_t n = ::pwrite(fd_, p, left, off_t(file_size_));
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) {
            if (n == 0) errno = ENOSPC;
            fail("could not write to a spool file");
        }
        p += n;
        left -= size_t(n);
        file_size_ += uint64_t(n);
    }
    buf_.clear();
}

void Spool::add(const void *data, size_t len) {
    if (reading_) throw std::logic_error("spool: add() after rewind()");
    if (len > UINT32_MAX) throw std::length_error("spool: record too large");
    uint32_t n = uint32_t(len);
    if (buf_.size() + sizeof n + len > kBufSize && !buf_.empty()) write_out();
    buf_.append(reinterpret_cast<const char *>(&n), sizeof n);
    buf_.append(static_cast<const char *>(data), len);
    if (buf_.size() >= kBufSize) write_out();
    records_++;
}

void Spool::mark_subxact(uint32_t xid) {
    if (xid == last_marked_ && !marks_.empty()) return;
    if (mark_of_.emplace(xid, marks_.size()).second) marks_.push_back({xid, bytes(), records_});
    last_marked_ = xid;
}

void Spool::abort_subxact(uint32_t xid) {
    auto it = mark_of_.find(xid);
    if (it == mark_of_.end()) return;   // it spooled nothing
    size_t i = it->second;
    uint64_t off = marks_[i].offset;
    records_ = marks_[i].records;
    for (size_t k = i; k < marks_.size(); k++) mark_of_.erase(marks_[k].xid);
    marks_.resize(i);
    last_marked_ = 0;
    if (off >= file_size_) {
        buf_.resize(size_t(off - file_size_));
        return;
    }
    buf_.clear();
    if (::ftruncate(fd_, off_t(off)) != 0) fail("could not truncate a spool file");
    file_size_ = off;
}

// The end of a stream block: the buffer's memory goes back too (many large
// transactions may be open at once; one is written at a time).
void Spool::flush() {
    if (reading_) return;
    if (!buf_.empty()) write_out();
    std::string().swap(buf_);
}

void Spool::rewind() {
    if (released_ != 0) throw std::logic_error("spool: rewind() after part of it was released");
    flush();
    reading_ = true;
    read_off_ = 0;
    pos_ = 0;
    buf_.clear();
}

// What has been read is not needed again. A spool is written while a large
// transaction runs and read once at its commit, usually before the kernel
// has written all of it to disk: punching the read part out of the file
// spares the disk the part still dirty in the page cache (and frees the
// cache), while JetStream stores the same messages on it. A file system
// that cannot punch holes keeps the file whole until it is closed.
void Spool::release_read() {
    uint64_t upto = read_off_ - read_off_ % kReleaseStep;
    if (!can_release_ || upto < released_ + kReleaseStep) return;
#ifdef FALLOC_FL_PUNCH_HOLE
    if (::fallocate(fd_, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, off_t(released_),
                    off_t(upto - released_)) == 0) {
        released_ = upto;
        return;
    }
#endif
    can_release_ = false;
}

bool Spool::next(const char **data, size_t *len) {
    if (!reading_) rewind();
    for (;;) {
        size_t avail = buf_.size() - pos_;
        uint32_t n = 0;
        if (avail >= sizeof n) {
            std::memcpy(&n, buf_.data() + pos_, sizeof n);
            if (avail >= sizeof n + n) {
                *data = buf_.data() + pos_ + sizeof n;
                *len = n;
                pos_ += sizeof n + n;
                return true;
            }
        }
        // refill: keep the partial record, read what follows it
        uint64_t file_pos = read_off_ + buf_.size();
        if (file_pos >= file_size_) {
            if (avail != 0) throw std::runtime_error("spool: truncated record");
            return false;
        }
        buf_.erase(0, pos_);
        read_off_ += pos_;
        pos_ = 0;
        release_read();
        size_t want = std::max(kBufSize, sizeof n + size_t(n));
        size_t have = buf_.size();
        size_t need = want > have ? want - have : 0;
        size_t chunk = size_t(std::min<uint64_t>(need + kBufSize / 2, file_size_ - file_pos));
        buf_.resize(have + chunk);
        size_t got = 0;
        while (got < chunk) {
            ssize_t r = ::pread(fd_, &buf_[have + got], chunk - got, off_t(file_pos + got));
            if (r < 0 && errno == EINTR) continue;
            if (r <= 0) {
                if (r == 0) errno = EIO;
                fail("could not read a spool file");
            }
            got += size_t(r);
        }
    }
}

}  // namespace creek
