// Package config loads a binary's configuration: defaults first, then a
// YAML file (--config), then environment overrides for secrets and the
// downward API, then validation.
//
// Configuration structs use yaml tags; time.Duration fields are written as
// "5s" in YAML and in the environment. An override's name is the prefix and
// the yaml path in upper case joined by underscores: the field
// `nats: {url: ...}` of the router is CAPSTREAM_ROUTER_NATS_URL when the
// prefix is CAPSTREAM_ROUTER. Fields tagged `secret:"true"` are redacted by
// Dump. Packages never read the environment or files themselves: main calls
// Load and hands each component its section.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// Validator is implemented by configs that check themselves. Validate
// returns every problem, joined with errors.Join.
type Validator interface {
	Validate() error
}

// maxFileBytes bounds a config file.
const maxFileBytes = 4 << 20

// Load fills dst, a pointer to a struct that already holds the defaults,
// from the YAML file at path (skipped when path is empty), then from the
// environment entries in environ (os.Environ() form) that start with
// prefix+"_", then calls dst.Validate when dst implements Validator.
// Unknown YAML keys and unknown override names are errors, so a typo never
// silently leaves a default in place.
func Load(path, prefix string, environ []string, dst any) error {
	if path != "" {
		data, err := os.ReadFile(path)
		if err != nil {
			return fmt.Errorf("read config: %w", err)
		}
		if len(data) > maxFileBytes {
			return fmt.Errorf("config %s: larger than %d bytes", path, maxFileBytes)
		}
		if err := decodeYAML(data, dst); err != nil {
			return fmt.Errorf("config %s: %w", path, err)
		}
	}
	if err := applyEnv(prefix, environ, dst); err != nil {
		return err
	}
	if v, ok := dst.(Validator); ok {
		if err := v.Validate(); err != nil {
			return fmt.Errorf("invalid config: %w", err)
		}
	}
	return nil
}

func decodeYAML(data []byte, dst any) error {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(dst); err != nil && !errors.Is(err, io.EOF) {
		return err
	}
	return nil
}

// applyEnv sets fields from PREFIX_PATH=value entries.
func applyEnv(prefix string, environ []string, dst any) error {
	fields := map[string]reflect.Value{}
	collect(reflect.ValueOf(dst).Elem(), prefix, fields)
	var errs []error
	for _, kv := range environ {
		name, value, ok := strings.Cut(kv, "=")
		if !ok || !strings.HasPrefix(name, prefix+"_") {
			continue
		}
		f, known := fields[name]
		if !known {
			errs = append(errs, fmt.Errorf("%s: no such setting", name))
			continue
		}
		if err := setFromString(f, value); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", name, err))
		}
	}
	return errors.Join(errs...)
}

// collect maps override names to settable leaf fields.
func collect(v reflect.Value, name string, out map[string]reflect.Value) {
	t := v.Type()
	for i := range t.NumField() {
		sf := t.Field(i)
		if !sf.IsExported() {
			continue
		}
		parts := strings.Split(sf.Tag.Get("yaml"), ",")
		tag := parts[0]
		if tag == "-" {
			continue
		}
		if slices.Contains(parts[1:], "inline") && sf.Type.Kind() == reflect.Struct {
			// An inlined struct's fields are the parent's, in YAML and
			// in the overrides alike.
			collect(v.Field(i), name, out)
			continue
		}
		if tag == "" {
			tag = strings.ToLower(sf.Name)
		}
		key := name + "_" + strings.ToUpper(strings.ReplaceAll(tag, "-", "_"))
		fv := v.Field(i)
		if fv.Kind() == reflect.Struct && sf.Type != reflect.TypeOf(time.Time{}) {
			collect(fv, key, out)
			continue
		}
		out[key] = fv
	}
}

func setFromString(f reflect.Value, s string) error {
	if f.Type() == reflect.TypeOf(time.Duration(0)) {
		d, err := time.ParseDuration(s)
		if err != nil {
			return err
		}
		f.SetInt(int64(d))
		return nil
	}
	switch f.Kind() {
	case reflect.String:
		f.SetString(s)
	case reflect.Bool:
		b, err := strconv.ParseBool(s)
		if err != nil {
			return err
		}
		f.SetBool(b)
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		n, err := strconv.ParseInt(s, 10, f.Type().Bits())
		if err != nil {
			return err
		}
		f.SetInt(n)
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		n, err := strconv.ParseUint(s, 10, f.Type().Bits())
		if err != nil {
			return err
		}
		f.SetUint(n)
	case reflect.Float32, reflect.Float64:
		n, err := strconv.ParseFloat(s, f.Type().Bits())
		if err != nil {
			return err
		}
		f.SetFloat(n)
	case reflect.Slice:
		if f.Type().Elem().Kind() != reflect.String {
			return fmt.Errorf("cannot set %s from the environment", f.Type())
		}
		var parts []string
		for _, p := range strings.Split(s, ",") {
			if p = strings.TrimSpace(p); p != "" {
				parts = append(parts, p)
			}
		}
		f.Set(reflect.ValueOf(parts))
	default:
		return fmt.Errorf("cannot set %s from the environment", f.Type())
	}
	return nil
}

// Dump writes cfg as YAML, with every field tagged `secret:"true"` that is
// not empty replaced by "REDACTED".
func Dump(w io.Writer, cfg any) error {
	v := reflect.New(reflect.TypeOf(cfg).Elem())
	v.Elem().Set(reflect.ValueOf(cfg).Elem())
	redact(v.Elem())
	enc := yaml.NewEncoder(w)
	enc.SetIndent(2)
	if err := enc.Encode(v.Interface()); err != nil {
		return err
	}
	return enc.Close()
}

func redact(v reflect.Value) {
	t := v.Type()
	for i := range t.NumField() {
		sf := t.Field(i)
		if !sf.IsExported() {
			continue
		}
		f := v.Field(i)
		switch {
		case sf.Tag.Get("secret") == "true" && f.Kind() == reflect.String && f.String() != "":
			f.SetString("REDACTED")
		case f.Kind() == reflect.Struct:
			redact(f)
		}
	}
}
