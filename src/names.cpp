// names.cpp: names between the database's encoding and UTF-8 (names.hpp).
#include "names.hpp"

#include "catalog/namespace.h"
#include "mb/pg_wchar.h"

bool creek_database_is_utf8()
{
    int enc = GetDatabaseEncoding();
    return enc == PG_UTF8 || enc == PG_SQL_ASCII;
}

const char *creek_name_utf8(const char *s)
{
    if (creek_database_is_utf8())
        return s;
    return (const char *) pg_do_encoding_conversion((unsigned char *) s, (int) strlen(s), GetDatabaseEncoding(),
                                                    PG_UTF8);
}

const char *creek_name_from_utf8(const char *s)
{
    int len = (int) strlen(s);
    if (!pg_verify_mbstr(PG_UTF8, s, len, true))
        return nullptr;
    if (creek_database_is_utf8())
        return s;
    int enc = GetDatabaseEncoding();
    Oid proc = FindDefaultConversionProc(PG_UTF8, enc);
    if (!OidIsValid(proc))
        return nullptr;
    // at most MAX_CONVERSION_GROWTH bytes per input byte, plus the terminator
    int cap = len * MAX_CONVERSION_GROWTH + 1;
    unsigned char *out = (unsigned char *) palloc(cap);
    int used = pg_do_encoding_conversion_buf(proc, PG_UTF8, enc, (unsigned char *) s, len, out, cap, true);
    if (used != len)
        return nullptr;   // stopped at a character the database encoding lacks
    return (const char *) out;
}
