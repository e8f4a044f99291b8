package sink

import (
	"errors"
	"net/http"

	"github.com/ClickHouse/clickhouse-go/v2/lib/column"
	"github.com/ClickHouse/clickhouse-go/v2/lib/proto"
	"github.com/minio/minio-go/v7"

	"github.com/capstream/capstream/schemas"
)

// ErrStorageRefused marks an error a sink found itself that the object
// store would refuse for good (a key longer than S3 allows); Permanent
// classifies it as schemas.FailureStorageRefused.
var ErrStorageRefused = errors.New("the object store refuses it")

// permanentS3Codes are the S3 error codes that retrying cannot fix, named
// for the record; every other 4xx but transientS3Codes is permanent too.
var permanentS3Codes = map[string]bool{
	"KeyTooLongError":           true,
	"AccessDenied":              true,
	"NoSuchBucket":              true,
	"InvalidBucketName":         true,
	"ExistingObjectIsDirectory": true, // a file-system backend: the key is a directory there
	"ObjectParentIsFile":        true, // and the other way round
	"InvalidObjectName":         true,
	"EntityTooLarge":            true,
	"MetadataTooLarge":          true,
	"InvalidArgument":           true,
}

// transientS3Codes are the 4xx answers that mean "not now": throttling,
// clock skew, credentials about to be refreshed, a body damaged in
// transit, a concurrent operation.
var transientS3Codes = map[string]bool{
	"RequestTimeout":              true,
	"RequestTimeTooSkewed":        true,
	"SlowDown":                    true,
	"SlowDownWrite":               true,
	"TooManyRequests":             true,
	"ExpiredToken":                true,
	"TokenRefreshRequired":        true,
	"OperationAborted":            true,
	"IncompleteBody":              true,
	"BadDigest":                   true,
	"XAmzContentSHA256Mismatch":   true,
	"InvalidDigest":               true,
	"RequestTimeoutException":     true,
	"ServiceUnavailable":          true,
	"InternalError":               true,
	"ConcurrentModificationError": true,
}

// permanentClickHouseCodes are ClickHouse exception codes
// (src/Common/ErrorCodes.cpp) of schema and type errors: the table or a
// column is not what the sink writes, or a value cannot be converted.
// Retrying the same rows cannot succeed until someone changes the schema.
// Everything else (network, timeouts, MEMORY_LIMIT_EXCEEDED 241,
// TOO_MANY_PARTS 252, TOO_MANY_SIMULTANEOUS_QUERIES 202, a server
// shutting down) stays transient.
var permanentClickHouseCodes = map[int32]string{
	6:   "CANNOT_PARSE_TEXT",
	8:   "THERE_IS_NO_COLUMN",
	10:  "NOT_FOUND_COLUMN_IN_BLOCK",
	16:  "NO_SUCH_COLUMN_IN_TABLE",
	20:  "NUMBER_OF_COLUMNS_DOESNT_MATCH",
	26:  "CANNOT_PARSE_QUOTED_STRING",
	27:  "CANNOT_PARSE_INPUT_ASSERTION_FAILED",
	38:  "CANNOT_PARSE_DATE",
	41:  "CANNOT_PARSE_DATETIME",
	43:  "ILLEGAL_TYPE_OF_ARGUMENT",
	44:  "ILLEGAL_COLUMN",
	47:  "UNKNOWN_IDENTIFIER",
	53:  "TYPE_MISMATCH",
	60:  "UNKNOWN_TABLE",
	62:  "SYNTAX_ERROR",
	70:  "CANNOT_CONVERT_TYPE",
	72:  "CANNOT_PARSE_NUMBER",
	81:  "UNKNOWN_DATABASE",
	117: "INCORRECT_DATA",
	386: "NO_COMMON_TYPE",
}

// Permanent classifies a write error of a sink: it returns the
// schemas.Failure reason and true when retrying cannot fix it, "" and
// false for everything else (network errors, timeouts, 5xx, an overloaded
// server), which the sink retries with backoff.
//
// Permanent for the object store: ErrStorageRefused, the codes of
// permanentS3Codes, and any other 4xx answer but the transient ones
// (throttling, clock skew, expiring credentials, damaged bodies). For
// ClickHouse: the exception codes of permanentClickHouseCodes, and a value
// the client cannot convert to the column's type (the table's schema
// changed under the sink).
func Permanent(err error) (reason string, permanent bool) {
	if err == nil {
		return "", false
	}
	if errors.Is(err, ErrStorageRefused) {
		return schemas.FailureStorageRefused, true
	}
	var s3err minio.ErrorResponse
	if errors.As(err, &s3err) {
		switch {
		case permanentS3Codes[s3err.Code]:
			return schemas.FailureStorageRefused, true
		case transientS3Codes[s3err.Code]:
			return "", false
		case s3err.StatusCode >= 400 && s3err.StatusCode < 500 &&
			s3err.StatusCode != http.StatusRequestTimeout && s3err.StatusCode != http.StatusTooManyRequests:
			return schemas.FailureStorageRefused, true
		}
		return "", false
	}
	var ex *proto.Exception
	if errors.As(err, &ex) {
		if _, ok := permanentClickHouseCodes[ex.Code]; ok {
			return schemas.FailureDatabaseRefused, true
		}
		return "", false
	}
	// Appending a row: the client converts to the column types the
	// server announced (encoding and decoding errors are the connection's).
	var be *proto.BlockError
	var ce *column.ColumnConverterError
	if errors.As(err, &be) && (be.Op == "Append" || be.Op == "AppendRow") || errors.As(err, &ce) {
		return schemas.FailureDatabaseRefused, true
	}
	return "", false
}
