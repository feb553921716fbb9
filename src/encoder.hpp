// encoder.hpp: encodes Postgres tuples as Avro records of a writer schema.
#pragma once

#include "pg.hpp"
#include "avro_writer.hpp"
#include "schema.hpp"

// Per-table state the encoder needs beyond the schema: output functions for
// columns (and array elements) encoded through their text form.
struct CreekColumnCodec {
    FmgrInfo out_fn;          // valid when the column (or its elements) use OutputText
    bool has_out_fn;
    int16 elem_len;           // array element storage
    bool elem_byval;
    char elem_align;
};

// Prepares codecs for every column of info (allocated in mcxt).
CreekColumnCodec *creek_prepare_codecs(const creek::TableInfo &info, MemoryContext mcxt);

// Writes the record made of the columns cols (indexes into info.columns) of
// tuple. Unchanged TOASTed values are written as the "unchanged" branch.
void creek_encode_record(creek::AvroWriter *w, const creek::TableInfo &info,
                         const CreekColumnCodec *codecs, const std::vector<int> &cols,
                         TupleDesc desc, HeapTuple tuple);
