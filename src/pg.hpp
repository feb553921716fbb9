// pg.hpp: the one place that includes Postgres headers for creek's C++ files
// that talk to Postgres. Plain C++ files (encoder primitives, publisher,
// fingerprints) never include it.
//
// Rule for every file that includes this: a Postgres ERROR is a longjmp. Code
// that calls a Postgres function that may raise an ERROR keeps no object with
// a destructor alive in its own frame or in any frame between it and the
// nearest PG_TRY/sigsetjmp (long-lived C++ state lives behind pointers owned
// elsewhere). C++ exceptions are caught at every extern "C" entry point and
// turned into ereport() after the catch block (CREEK_CXX_GUARD below).
#pragma once

#include <exception>

extern "C" {
#include "postgres.h"

#include "access/genam.h"
#include "access/heapam.h"
#include "access/htup_details.h"
#include "access/relation.h"
#include "access/skey.h"
#include "access/table.h"
#include "access/xact.h"
#include "access/xlog.h"
#include "access/xlogreader.h"
#include "access/xlogutils.h"
#include "access/tupconvert.h"
#include "catalog/indexing.h"
#include "catalog/namespace.h"
#include "catalog/partition.h"
#include "catalog/pg_class.h"
#include "catalog/pg_database.h"
#include "catalog/pg_enum.h"
#include "catalog/pg_extension.h"
#include "catalog/pg_inherits.h"
#include "catalog/pg_type.h"
#include "commands/dbcommands.h"
#include "commands/extension.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "replication/decode.h"
#include "replication/logical.h"
#include "replication/output_plugin.h"
#include "replication/slot.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/lwlock.h"
#include "storage/proc.h"
#include "storage/procarray.h"
#include "storage/shmem.h"
#include "storage/spin.h"
#include "tcop/tcopprot.h"
#include "tcop/utility.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/guc.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/pg_lsn.h"
#include "utils/rel.h"
#include "utils/resowner.h"
#include "utils/snapmgr.h"
#include "utils/syscache.h"
#include "utils/timestamp.h"
#include "common/pg_prng.h"
#include "pgtime.h"
#include "utils/typcache.h"
#include "utils/rangetypes.h"
#include "utils/multirangetypes.h"
#include "utils/catcache.h"
#include "utils/cash.h"
#include "access/detoast.h"
#include "access/tableam.h"
#include "catalog/catalog.h"
#include "executor/spi.h"
#include "mb/pg_wchar.h"
#include "nodes/bitmapset.h"
#include "utils/array.h"
#include "utils/date.h"
#include "utils/datum.h"
#include "utils/relcache.h"
#include "utils/uuid.h"
#include "utils/wait_event.h"
}

// Runs stmt; a C++ exception becomes a Postgres ERROR ("<prefix>: <exception>")
// raised after the catch block, so the longjmp crosses no C++ frame.
// prefix is a string literal.
#define CREEK_CXX_GUARD(stmt, prefix)                                                  \
    do {                                                                               \
        char creek_err_[256];                                                          \
        bool creek_failed_ = false;                                                    \
        try {                                                                          \
            stmt;                                                                      \
        } catch (const std::exception &e) {                                            \
            creek_failed_ = true;                                                      \
            strlcpy(creek_err_, e.what(), sizeof creek_err_);                          \
        } catch (...) {                                                                \
            creek_failed_ = true;                                                      \
            strlcpy(creek_err_, "unknown C++ exception", sizeof creek_err_);           \
        }                                                                              \
        if (creek_failed_)                                                             \
            ereport(ERROR, (errcode(ERRCODE_INTERNAL_ERROR), errmsg(prefix ": %s", creek_err_))); \
    } while (0)

// LSN_FORMAT_ARGS uses a C-only type check.
#undef LSN_FORMAT_ARGS
#define LSN_FORMAT_ARGS(lsn) ((uint32) ((lsn) >> 32)), ((uint32) (lsn))

// Postgres defines these as macros; they collide with the C++ library.
#undef vsnprintf
#undef snprintf
#undef vsprintf
#undef sprintf
#undef vfprintf
#undef fprintf
#undef vprintf
#undef printf
