/* Recoverable errors: a status code plus a message with context.
 * Every function that reads data, files or messages returns esgd_status and
 * fills an optional esgd_error; broken invariants use assert instead. */
#ifndef ESGD_ERROR_H
#define ESGD_ERROR_H

typedef enum esgd_status {
    ESGD_OK = 0,
    ESGD_ERR_ARG,        /* invalid argument or configuration value */
    ESGD_ERR_NOMEM,      /* allocation failed */
    ESGD_ERR_IO,         /* file missing, unreadable or short write */
    ESGD_ERR_FORMAT,     /* corrupt file or message that is not valid msgpack/IDX */
    ESGD_ERR_TRUNCATED,  /* data ends before its declared length */
    ESGD_ERR_VERSION,    /* unknown wire or file version */
    ESGD_ERR_TYPE,       /* a field has the wrong type */
    ESGD_ERR_MISSING,    /* a required field is absent */
    ESGD_ERR_RANGE,      /* a value or index outside its allowed range */
    ESGD_ERR_ORDER,      /* indices unsorted or duplicated */
    ESGD_ERR_NONFINITE,  /* NaN or Inf where a finite number is required */
    ESGD_ERR_DIMENSION,  /* dimension does not match the model */
    ESGD_ERR_TOO_LARGE,  /* over a configured size limit */
    ESGD_ERR_MISMATCH,   /* wrong job, unknown agent, round not open, payload and topic disagree */
    ESGD_ERR_SIGNATURE,  /* missing or bad signature, or no key for the signer */
    ESGD_ERR_STALE,      /* a message of another run of the job */
    ESGD_STATUS_COUNT
} esgd_status;

typedef struct esgd_error {
    esgd_status status;
    char message[256];
} esgd_error;

/* Short stable lower-case name ("truncated", "nonfinite", ...): used as a
 * metric label and in logs. Never NULL. */
const char *esgd_status_name(esgd_status status);

/* One-line description of a status. Never NULL. */
const char *esgd_strerror(esgd_status status);

/* Records status and a printf-style message in err (err may be NULL) and
 * returns status, so callers can write `return esgd_error_set(err, ...)`. */
esgd_status esgd_error_set(esgd_error *err, esgd_status status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Prefixes err->message with more context ("loading shard: ..."). */
void esgd_error_prefix(esgd_error *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
