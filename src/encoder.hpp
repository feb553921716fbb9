// encoder.hpp: encodes Postgres tuples as Avro records of a writer schema.
#pragma once

#include "pg.hpp"
#include "avro_writer.hpp"
#include "schema.hpp"

// What the encoder needs of a type beyond its TypeInfo (a tree like it):
// output functions, storage, type caches, composite descriptors.
typedef struct CreekCodec {
    FmgrInfo out_fn;          // OutputText and Enum
    bool has_out_fn;
    int16 typlen;
    bool typbyval;
    char typalign;
    TypeCacheEntry *typcache; // ranges and multiranges
    TupleDesc tupdesc;        // composites
    struct CreekCodec *elem;  // array element, range subtype, multirange's range
    struct CreekCodec *fields;  // composite attributes (as TypeInfo::fields)
} CreekCodec;
typedef CreekCodec CreekColumnCodec;

// Prepares codecs for every column of info (allocated in mcxt).
CreekColumnCodec *creek_prepare_codecs(const creek::TableInfo &info, MemoryContext mcxt);

// Writes the record made of the columns cols (indexes into info.columns) of
// tuple. Unchanged TOASTed values (external on-disk pointers in decoded
// changes) are written as the "unchanged" branch, unless detoast: then they
// are fetched (a table scan's tuples).
void creek_encode_record(creek::AvroWriter *w, const creek::TableInfo &info,
                         const CreekColumnCodec *codecs, const std::vector<int> &cols,
                         TupleDesc desc, HeapTuple tuple, bool detoast = false);
