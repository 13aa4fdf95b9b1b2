/* typemap: Druid SQL types (INFORMATION_SCHEMA.COLUMNS.DATA_TYPE) to PostgreSQL column
 * types (SPEC 3.1), and the widening rules used when a column's type changes. */
#ifndef DSYNC_TYPEMAP_H
#define DSYNC_TYPEMAP_H

enum pgtype {
    PGT_TEXT = 0,
    PGT_BIGINT,
    PGT_DOUBLE,
    PGT_BOOLEAN,
    PGT_TIMESTAMPTZ,
    PGT_DATE,
    PGT_JSONB,
};

/* VARCHAR/CHAR -> text; BIGINT/INTEGER/SMALLINT/TINYINT -> bigint; DOUBLE/FLOAT/REAL/DECIMAL
 * -> double precision; BOOLEAN -> boolean; TIMESTAMP -> timestamptz; DATE -> date; ARRAY
 * (any "ARRAY..." spelling) and COMPLEX<json> -> jsonb; any other COMPLEX<...>, OTHER or
 * unknown name -> text. Case-insensitive; NULL gives text. */
enum pgtype typemap_from_druid(const char *druid_sql_type);
/* "text", "bigint", "double precision", "boolean", "timestamptz", "date", "jsonb". */
const char *typemap_pg_name(enum pgtype t);
/* Inverse of typemap_pg_name, also accepting PostgreSQL's catalog spellings
 * ("timestamp with time zone", "int8", "float8", "bool", ...). -1 if not one of ours. */
int typemap_from_pg_name(const char *pg_name, enum pgtype *out);
/* The type a column must have to hold both: equal -> same; bigint+double -> double;
 * boolean+bigint -> bigint; date+timestamptz -> timestamptz; anything else -> text. */
enum pgtype typemap_widen(enum pgtype have, enum pgtype want);

#endif
