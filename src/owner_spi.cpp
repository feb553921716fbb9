// owner_spi.cpp: SQL run as the owner of one of creek's tables (see
// owner_spi.hpp).
#include "owner_spi.hpp"

Oid creek_own_table(const char *table)
{
    Oid nsp = get_namespace_oid("creek", true);
    return OidIsValid(nsp) ? get_relname_relid(table, nsp) : InvalidOid;
}

int creek_execute_as_owner(const char *table, const char *sql, int nargs, Oid *types, Datum *values)
{
    Oid relid = creek_own_table(table);
    HeapTuple tup = SearchSysCache1(RELOID, ObjectIdGetDatum(relid));
    if (!HeapTupleIsValid(tup))
        elog(ERROR, "creek: cache lookup failed for relation creek.%s", table);
    Oid owner = ((Form_pg_class) GETSTRUCT(tup))->relowner;
    ReleaseSysCache(tup);
    Oid save_userid;
    int save_sec;
    GetUserIdAndSecContext(&save_userid, &save_sec);
    // (an error in between aborts the transaction, which restores both)
    SetUserIdAndSecContext(owner, save_sec | SECURITY_LOCAL_USERID_CHANGE);
    SPI_connect();
    int rc = SPI_execute_with_args(sql, nargs, types, values, nullptr, false, 0);
    if (rc < 0)
        elog(ERROR, "creek: SPI_execute failed: %s", SPI_result_code_string(rc));
    int n = (int) SPI_processed;
    SPI_finish();
    SetUserIdAndSecContext(save_userid, save_sec);
    return n;
}
