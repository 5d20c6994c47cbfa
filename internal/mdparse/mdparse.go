// Package mdparse decodes Dapr component metadata (a map of strings) into a struct, strictly.
//
// Dapr's own decoder is lenient: "banana" becomes false for a bool and a misspelt key is silently
// ignored. mqdapr's components must name what is wrong instead, so this decoder:
//   - matches keys case-insensitively against the `mapstructure` tags of the struct (nested structs
//     tagged `mapstructure:",squash"` are flattened);
//   - rejects malformed values with an error naming the key and what is accepted;
//   - reports unknown keys to the caller, which warns about those that daprd did not add itself.
//
// Supported field kinds: string, bool, signed and unsigned integers (range-checked against the
// field's type), time.Duration (a Go duration such as "90s", or a whole number of seconds) and
// pointers to those (nil when the key is absent, so defaults can depend on presence).
package mdparse

import (
	"errors"
	"fmt"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"time"
)

// ErrInvalid is wrapped by every error about a malformed metadata value.
var ErrInvalid = errors.New("invalid metadata")

var durationType = reflect.TypeOf(time.Duration(0))

// Decode writes the values of props into the struct pointed to by out and returns the keys of
// props that match no field, sorted. Fields whose key is absent keep their value, so callers set
// defaults on the struct before calling Decode.
func Decode(props map[string]string, out any) (unknown []string, err error) {
	v := reflect.ValueOf(out)
	if v.Kind() != reflect.Pointer || v.Elem().Kind() != reflect.Struct {
		return nil, fmt.Errorf("mdparse: Decode needs a pointer to a struct, got %T", out)
	}
	fields := map[string]reflect.Value{}
	collect(v.Elem(), fields)

	seen := map[string]string{}
	for key, raw := range props {
		lk := strings.ToLower(key)
		if prev, dup := seen[lk]; dup {
			return nil, fmt.Errorf("%w: keys %q and %q differ only in case; give one", ErrInvalid, prev, key)
		}
		seen[lk] = key
		f, ok := fields[lk]
		if !ok {
			unknown = append(unknown, key)
			continue
		}
		if err := set(f, key, raw); err != nil {
			return nil, err
		}
	}
	sort.Strings(unknown)
	return unknown, nil
}

// Keys returns the metadata keys (as spelt in the tags) that the struct type accepts, sorted.
func Keys(out any) []string {
	var names []string
	t := reflect.TypeOf(out).Elem()
	var walk func(reflect.Type)
	walk = func(t reflect.Type) {
		for i := range t.NumField() {
			sf := t.Field(i)
			tag := sf.Tag.Get("mapstructure")
			if tag == ",squash" {
				walk(sf.Type)
				continue
			}
			if tag != "" && tag != "-" {
				names = append(names, tag)
			}
		}
	}
	walk(t)
	sort.Strings(names)
	return names
}

func collect(v reflect.Value, fields map[string]reflect.Value) {
	t := v.Type()
	for i := range t.NumField() {
		sf := t.Field(i)
		tag := sf.Tag.Get("mapstructure")
		switch {
		case tag == ",squash":
			collect(v.Field(i), fields)
		case tag != "" && tag != "-":
			fields[strings.ToLower(tag)] = v.Field(i)
		}
	}
}

func set(f reflect.Value, key, raw string) error {
	if f.Kind() == reflect.Pointer {
		p := reflect.New(f.Type().Elem())
		if err := set(p.Elem(), key, raw); err != nil {
			return err
		}
		f.Set(p)
		return nil
	}
	s := strings.TrimSpace(raw)
	if f.Type() == durationType {
		d, err := ParseDuration(s)
		if err != nil {
			return fmt.Errorf("%w: %s=%q: want a duration such as \"30s\" or \"5m\", or whole seconds", ErrInvalid, key, raw)
		}
		f.SetInt(int64(d))
		return nil
	}
	switch f.Kind() {
	case reflect.String:
		f.SetString(raw)
	case reflect.Bool:
		b, err := ParseBool(s)
		if err != nil {
			return fmt.Errorf("%w: %s=%q: want true or false", ErrInvalid, key, raw)
		}
		f.SetBool(b)
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		n, err := strconv.ParseInt(s, 10, f.Type().Bits())
		if err != nil {
			return fmt.Errorf("%w: %s=%q: want a whole number from %d to %d", ErrInvalid, key, raw,
				-(int64(1) << (f.Type().Bits() - 1)), int64(1)<<(f.Type().Bits()-1)-1)
		}
		f.SetInt(n)
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		n, err := strconv.ParseUint(s, 10, f.Type().Bits())
		if err != nil {
			return fmt.Errorf("%w: %s=%q: want a whole number from 0 to %d", ErrInvalid, key, raw,
				uint64(1)<<f.Type().Bits()-1)
		}
		f.SetUint(n)
	default:
		return fmt.Errorf("mdparse: field for %q has unsupported kind %s", key, f.Kind())
	}
	return nil
}

// ParseBool accepts true/false, yes/no, on/off and 1/0 in any case; anything else is an error.
func ParseBool(s string) (bool, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "true", "yes", "on", "1":
		return true, nil
	case "false", "no", "off", "0":
		return false, nil
	}
	return false, fmt.Errorf("%w: %q is not a boolean", ErrInvalid, s)
}

// ParseDuration accepts a Go duration ("1h30m") or a whole number of seconds ("90"). Negative
// durations are refused.
func ParseDuration(s string) (time.Duration, error) {
	s = strings.TrimSpace(s)
	if n, err := strconv.ParseInt(s, 10, 64); err == nil {
		if n < 0 || n > int64(time.Duration(1<<63-1)/time.Second) {
			return 0, fmt.Errorf("%w: %q is out of range", ErrInvalid, s)
		}
		return time.Duration(n) * time.Second, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < 0 {
		return 0, fmt.Errorf("%w: %q is not a non-negative duration", ErrInvalid, s)
	}
	return d, nil
}

// daprdKeys are metadata keys daprd adds to every component's metadata, or interprets itself
// (scopes, outbox, key prefix, raw payloads): components accept them without a warning.
var daprdKeys = []string{
	"actorStateStore", "allowedTopics", "consumerID", "keyPrefix", "namespace",
	"outboxDiscardWhenMissingState", "outboxPublishPubsub", "outboxPublishTopic", "outboxPubsub",
	"protectedTopics", "publishingScopes", "rawPayload", "subscriptionScopes",
}

// WithoutDaprdKeys returns unknown without the keys daprd adds itself (compared case-insensitively).
func WithoutDaprdKeys(unknown []string) []string {
	out := unknown[:0:0]
	for _, k := range unknown {
		daprd := false
		for _, d := range daprdKeys {
			if strings.EqualFold(d, k) {
				daprd = true
				break
			}
		}
		if !daprd {
			out = append(out, k)
		}
	}
	return out
}

// DecodeComponent is Decode for a Dapr component's metadata: the unknown keys it returns leave out
// those daprd adds itself, so that the caller can warn about the rest.
func DecodeComponent(props map[string]string, out any) (unknown []string, err error) {
	unknown, err = Decode(props, out)
	if err != nil {
		return nil, err
	}
	return WithoutDaprdKeys(unknown), nil
}
