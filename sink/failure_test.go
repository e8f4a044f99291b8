package sink

import (
	"context"
	"errors"
	"fmt"
	"net"
	"testing"

	"github.com/ClickHouse/clickhouse-go/v2/lib/proto"
	"github.com/minio/minio-go/v7"

	"github.com/capstream/capstream/schemas"
)

func TestPermanent(t *testing.T) {
	s3 := func(code string, status int) error {
		return fmt.Errorf("put object k: %w", minio.ErrorResponse{Code: code, StatusCode: status})
	}
	ch := func(code int32) error { return fmt.Errorf("insert: %w", &proto.Exception{Code: code}) }
	tests := map[string]struct {
		err  error
		want string // "" for transient
	}{
		"nil":                  {nil, ""},
		"key too long":         {s3("KeyTooLongError", 400), schemas.FailureStorageRefused},
		"access denied":        {s3("AccessDenied", 403), schemas.FailureStorageRefused},
		"no such bucket":       {s3("NoSuchBucket", 404), schemas.FailureStorageRefused},
		"invalid bucket":       {s3("InvalidBucketName", 400), schemas.FailureStorageRefused},
		"directory":            {s3("ExistingObjectIsDirectory", 409), schemas.FailureStorageRefused},
		"other 4xx":            {s3("SomethingNew", 400), schemas.FailureStorageRefused},
		"own check":            {fmt.Errorf("put: %w", ErrStorageRefused), schemas.FailureStorageRefused},
		"slow down":            {s3("SlowDown", 503), ""},
		"throttled 4xx":        {s3("TooManyRequests", 429), ""},
		"clock skew":           {s3("RequestTimeTooSkewed", 403), ""},
		"expired token":        {s3("ExpiredToken", 400), ""},
		"request timeout":      {s3("RequestTimeout", 400), ""},
		"s3 internal":          {s3("InternalError", 500), ""},
		"s3 unavailable":       {s3("", 503), ""},
		"unknown table":        {ch(60), schemas.FailureDatabaseRefused},
		"no such column":       {ch(16), schemas.FailureDatabaseRefused},
		"there is no column":   {ch(8), schemas.FailureDatabaseRefused},
		"type mismatch":        {ch(53), schemas.FailureDatabaseRefused},
		"cannot parse":         {ch(6), schemas.FailureDatabaseRefused},
		"illegal type":         {ch(43), schemas.FailureDatabaseRefused},
		"unknown identifier":   {ch(47), schemas.FailureDatabaseRefused},
		"memory limit":         {ch(241), ""},
		"too many parts":       {ch(252), ""},
		"too many queries":     {ch(202), ""},
		"append conversion":    {&proto.BlockError{Op: "AppendRow", Err: errors.New("converting string to UInt8 is unsupported")}, schemas.FailureDatabaseRefused},
		"block decode":         {&proto.BlockError{Op: "Decode", Err: errors.New("eof")}, ""},
		"network":              {fmt.Errorf("dial: %w", &net.OpError{Op: "dial", Err: errors.New("connection refused")}), ""},
		"deadline":             {fmt.Errorf("insert: %w", context.DeadlineExceeded), ""},
		"plain error":          {errors.New("something"), ""},
		"s3 inside clickhouse": {fmt.Errorf("a: %w", fmt.Errorf("b: %w", minio.ErrorResponse{Code: "AccessDenied", StatusCode: 403})), schemas.FailureStorageRefused},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			got, ok := Permanent(tc.err)
			if got != tc.want || ok != (tc.want != "") {
				t.Errorf("Permanent(%v) = %q, %v; want %q", tc.err, got, ok, tc.want)
			}
		})
	}
}
