// spool.hpp: the changes of one large transaction that logical decoding
// streams to creek before the transaction commits (plain C++, no Postgres).
//
// When a transaction's changes outgrow logical_decoding_work_mem, Postgres
// hands them to creek's stream callbacks (decoder.cpp) instead of spilling
// them to its own files. creek encodes each change at once and appends it
// here; at the commit it reads the records back in order and publishes them.
// An aborted transaction's spool is dropped; an aborted subtransaction's
// records (always the newest ones: subtransactions nest) are cut off.
//
// Records are length-prefixed byte strings in an anonymous temporary file
// (O_TMPFILE, or created and unlinked at once: nothing to clean up after a
// crash), written and read through a 1 MB buffer. Errors throw
// std::runtime_error.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <unordered_map>
#include <vector>

namespace creek {

class Spool {
public:
    // dir: where the file goes (the data directory's base/pgsql_tmp).
    explicit Spool(const std::string &dir);
    ~Spool();
    Spool(const Spool &) = delete;
    Spool &operator=(const Spool &) = delete;

    // Appends one record.
    void add(const void *data, size_t len);
    // Notes where subtransaction xid's records begin (its first record is
    // the next one), unless already noted.
    void mark_subxact(uint32_t xid);
    // Drops the records of subtransaction xid and of everything after it.
    void abort_subxact(uint32_t xid);
    // Writes the buffer out (the end of a streamed block).
    void flush();

    // Reading, after the last add(): rewind(), then next() until false. A
    // record stays valid until the next call. Reading is done once: the
    // file's blocks behind the reader are given back as it goes, 8 MB at a
    // time (see release_read()), and rewind() throws once some were.
    void rewind();
    bool next(const char **data, size_t *len);

    uint64_t records() const { return records_; }
    uint64_t bytes() const { return file_size_ + buf_.size(); }
    // What the file takes on its file system now (st_blocks).
    uint64_t allocated() const;

private:
    void write_out();
    void release_read();
    void fail(const char *what) const;

    int fd_ = -1;
    std::string buf_;          // pending writes, or the read window
    uint64_t file_size_ = 0;   // bytes in the file
    uint64_t records_ = 0;
    struct Mark {
        uint32_t xid;
        uint64_t offset, records;   // where its records begin
    };
    std::vector<Mark> marks_;                        // in order
    std::unordered_map<uint32_t, size_t> mark_of_;   // xid -> index in marks_
    uint32_t last_marked_ = 0;
    // reading
    bool reading_ = false;
    uint64_t read_off_ = 0;    // file offset of buf_[0]
    size_t pos_ = 0;           // next record in buf_
    uint64_t released_ = 0;    // the file's bytes before this are punched out
    bool can_release_ = true;  // false once the file system refused to punch
};

}  // namespace creek
