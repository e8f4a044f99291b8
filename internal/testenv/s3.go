package testenv

import (
	"context"
	"testing"

	"github.com/minio/minio-go/v7"

	"github.com/capstream/capstream/internal/clients"
)

// S3Bucket is a private bucket on the real S3 server.
type S3Bucket struct {
	Endpoint  string
	AccessKey string
	SecretKey string
	Bucket    string
	Client    *minio.Client
}

var s3Probe probe

// S3Config is how a component reaches the test S3 server: over HTTPS,
// verified against the dev CA (deps.sh serves versitygw with TLS only).
func S3Config() clients.S3Config {
	return clients.S3Config{Endpoint: Getenv(EnvS3Endpoint), AccessKey: Getenv(EnvS3AccessKey), SecretKey: Getenv(EnvS3SecretKey),
		Secure: true, TLS: clients.TLSConfig{CAFile: Getenv(EnvTLSCA)}}
}

// S3Client connects minio-go to the test S3 server as S3Config says.
func S3Client() (*minio.Client, string, error) {
	c := S3Config()
	c.Bucket = "probe"
	cl, err := c.Client()
	return cl, c.Endpoint, err
}

// S3 creates a bucket with a random name and removes it, with everything in
// it, when the test ends.
func S3(t testing.TB) *S3Bucket {
	t.Helper()
	skipShort(t, "S3")
	client, endpoint, err := S3Client()
	if err == nil {
		err = s3Probe.check(func() error {
			ctx, cancel := context.WithTimeout(context.Background(), probeTimeout)
			defer cancel()
			_, err := client.ListBuckets(ctx)
			return err
		})
	}
	if err != nil {
		unavailable(t, "S3 at "+endpoint, err)
	}
	bucket := "test-" + randomHex(6)
	if err := client.MakeBucket(t.Context(), bucket, minio.MakeBucketOptions{}); err != nil {
		t.Fatalf("make bucket %s: %v", bucket, err)
	}
	t.Cleanup(func() {
		ctx, cancel := ctxTimeout(cleanupTimeout)
		defer cancel()
		removeBucket(ctx, t, client, bucket)
	})
	return &S3Bucket{
		Endpoint:  endpoint,
		AccessKey: Getenv(EnvS3AccessKey),
		SecretKey: Getenv(EnvS3SecretKey),
		Bucket:    bucket,
		Client:    client,
	}
}

func removeBucket(ctx context.Context, t testing.TB, c *minio.Client, bucket string) {
	objects := c.ListObjects(ctx, bucket, minio.ListObjectsOptions{Recursive: true})
	for r := range c.RemoveObjects(ctx, bucket, objects, minio.RemoveObjectsOptions{}) {
		t.Errorf("remove %s/%s: %v", bucket, r.ObjectName, r.Err)
	}
	for u := range c.ListIncompleteUploads(ctx, bucket, "", true) {
		if u.Err == nil {
			_ = c.RemoveIncompleteUpload(ctx, bucket, u.Key)
		}
	}
	if err := c.RemoveBucket(ctx, bucket); err != nil {
		t.Errorf("remove bucket %s: %v", bucket, err)
	}
}

// Config is how a component reaches the bucket.
func (b *S3Bucket) Config() clients.S3Config {
	c := S3Config()
	c.Endpoint, c.Bucket, c.AccessKey, c.SecretKey = b.Endpoint, b.Bucket, b.AccessKey, b.SecretKey
	return c
}
