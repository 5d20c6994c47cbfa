package statestore

import (
	"context"
	"errors"
	"testing"
)

// TestRequestValidation covers the MQTT-level rules of docs/state-store-protocol.md#topics and
// #mqtt-properties: such requests get no response; Handle returns the error so the broker can
// refuse the PUBLISH or disconnect.
func TestRequestValidation(t *testing.T) {
	good := req("app1", array("GET", "k"))
	tests := []struct {
		name   string
		mutate func(*Request)
		want   error
	}{
		{"wrong topic", func(r *Request) { r.Topic = "statestore/FA9AE35F-2F64-47CD-9BFF-08E2B32A0FE8/command/invoke" }, ErrNotRequestTopic},
		{"old preview topic", func(r *Request) { r.Topic = "$services/statestore/_any_/command/invoke/request" }, ErrNotRequestTopic},
		{"QoS 0", func(r *Request) { r.QoS = 0 }, ErrInvalidQoS},
		{"QoS 2", func(r *Request) { r.QoS = 2 }, ErrInvalidQoS},
		{"no response topic", func(r *Request) { r.Properties.ResponseTopic = "" }, ErrMissingResponseTopic},
		{"response topic = request topic", func(r *Request) { r.Properties.ResponseTopic = RequestTopic }, ErrForbiddenResponseTopic},
		{"response topic = notify prefix", func(r *Request) { r.Properties.ResponseTopic = NotifyTopicPrefix }, ErrForbiddenResponseTopic},
		{"response topic under notify prefix", func(r *Request) {
			r.Properties.ResponseTopic = NotifyTopicPrefix + "/61/command/notify/61"
		}, ErrForbiddenResponseTopic},
		{"prefix without separator", func(r *Request) { r.Properties.ResponseTopic = NotifyTopicPrefix + "X" }, ErrForbiddenResponseTopic},
		{"wildcard + in response topic", func(r *Request) { r.Properties.ResponseTopic = "clients/+/response" }, ErrInvalidResponseTopic},
		{"wildcard # in response topic", func(r *Request) { r.Properties.ResponseTopic = "clients/#" }, ErrInvalidResponseTopic},
		{"no correlation data", func(r *Request) { r.Properties.CorrelationData = nil }, ErrMissingCorrelationData},
		{"empty correlation data", func(r *Request) { r.Properties.CorrelationData = []byte{} }, ErrMissingCorrelationData},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, nil)
			r := good
			r.Properties.User = append([]UserProperty(nil), good.Properties.User...)
			tc.mutate(&r)
			res, err := h.e.Handle(context.Background(), r)
			if !errors.Is(err, tc.want) {
				t.Fatalf("Handle = %v, want %v", err, tc.want)
			}
			if res.Response.Topic != "" || res.Response.Payload != nil {
				t.Errorf("a response was produced: %+v", res.Response)
			}
		})
	}
}

func TestAcceptedResponseTopics(t *testing.T) {
	// docs/state-store-protocol.md#topics: the forms the docs and the SDKs use are all accepted.
	for _, rt := range []string{
		"clients/app1/services/statestore/_any_/command/invoke/response",
		"clients/app1/services/statestore/v1/FA9AE35F-2F64-47CD-9BFF-08E2B32A0FE8/command/invoke/response",
		"clients/61707031/statestore/v1/FA9AE35F-2F64-47CD-9BFF-08E2B32A0FE8/command/invoke/response",
		"clients/app1" + RequestTopic,
		"clients/statestore/FA9AE35F-2F64-47CD-9BFF-08E2B32A0FE8/x", // the Apr 2024 prefix, no v1
	} {
		h := newHarness(t, nil)
		r := req("app1", array("GET", "k"))
		r.Properties.ResponseTopic = rt
		res, err := h.e.Handle(context.Background(), r)
		if err != nil || res.Response.Topic != rt {
			t.Errorf("response topic %q: %v, %q", rt, err, res.Response.Topic)
		}
	}
}

func TestMatch(t *testing.T) {
	h := newHarness(t, nil)
	tests := []struct {
		topic string
		want  bool
	}{
		{"statestore/v1/FA9AE35F-2F64-47CD-9BFF-08E2B32A0FE8/command/invoke", true},
		{"statestore/v1/fa9ae35f-2f64-47cd-9bff-08e2b32a0fe8/command/invoke", false},
		{"statestore/v1/FA9AE35F-2F64-47CD-9BFF-08E2B32A0FE8/command/invoke/", false},
		{"statestore/FA9AE35F-2F64-47CD-9BFF-08E2B32A0FE8/command/invoke", false},
		{"$services/statestore/_any_/command/invoke/request", false},
		{"", false},
	}
	for _, tc := range tests {
		if got := h.e.Match(tc.topic); got != tc.want {
			t.Errorf("Match(%q) = %v, want %v", tc.topic, got, tc.want)
		}
	}
}

func TestProtocolVersion(t *testing.T) {
	tests := []struct {
		name    string
		version string // "" means the property is absent
		status  string
	}{
		{"absent means 1.0", "", "200"},
		{"1.0", "1.0", "200"},
		{"1.5 same major", "1.5", "200"},
		{"2.0 unsupported major", "2.0", "505"},
		{"garbage", "x", "505"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, nil)
			r := req("app1", array("GET", "k"))
			r.Properties.User = nil
			if tc.version != "" {
				r.Properties.User = []UserProperty{{PropProtocolVersion, tc.version}}
			}
			res, err := h.e.Handle(context.Background(), r)
			if err != nil {
				t.Fatal(err)
			}
			if got, _ := res.Response.Properties.Get(PropStatus); got != tc.status {
				t.Errorf("__stat = %q, want %q", got, tc.status)
			}
			if tc.status == "505" {
				// docs/state-store-protocol.md#mqtt-properties: RPC-level errors use __stMsg, __supProtMajVer,
				// __requestProtVer; no payload.
				p := res.Response.Properties
				if v, _ := p.Get(PropSupportedMajor); v != "1" {
					t.Errorf("__supProtMajVer = %q", v)
				}
				if v, _ := p.Get(PropRequestProtVer); v != tc.version {
					t.Errorf("__requestProtVer = %q", v)
				}
				if v, _ := p.Get(PropStatusMessage); v == "" {
					t.Error("no __stMsg")
				}
				if res.Response.Payload != nil || string(p.CorrelationData) != string(corr) {
					t.Errorf("505 response payload %q corr %x", res.Response.Payload, p.CorrelationData)
				}
			}
		})
	}
}

func TestResponseDoesNotAliasRequest(t *testing.T) {
	h := newHarness(t, nil)
	r := req("app1", array("SET", "k", "value"), "__ts="+ts(t0, 0, "c"))
	r.Properties.CorrelationData = append([]byte(nil), corr...)
	res, err := h.e.Handle(context.Background(), r)
	if err != nil {
		t.Fatal(err)
	}
	// The broker may reuse the request's buffers.
	for i := range r.Payload {
		r.Payload[i] = 'X'
	}
	r.Properties.CorrelationData[0] = 0xEE
	if string(res.Response.Properties.CorrelationData) != string(corr) {
		t.Error("response correlation data aliases the request")
	}
	checkPayload(t, h.do(array("GET", "k")), "$5\r\nvalue\r\n")
}

func TestClose(t *testing.T) {
	h := newHarness(t, nil)
	h.set("k", "v", "PX", "10")
	if err := h.e.Close(); err != nil {
		t.Fatal(err)
	}
	if err := h.e.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := h.e.Handle(context.Background(), req("app1", array("GET", "k"))); !errors.Is(err, ErrClosed) {
		t.Errorf("Handle after Close = %v", err)
	}
	if err := h.e.Load(context.Background()); !errors.Is(err, ErrClosed) {
		t.Errorf("Load after Close = %v", err)
	}
	if n := h.e.Expire(context.Background(), h.wall.Now().Add(1e9)); n != nil {
		t.Errorf("Expire after Close = %v", n)
	}
}

func TestOptionsValidation(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(*Options)
	}{
		{"node ID with colon", func(o *Options) { o.NodeID = "a:b" }},
		{"zero skew", func(o *Options) { o.MaxClockSkew = 0 }},
		{"negative MaxKeys", func(o *Options) { o.MaxKeys = -1 }},
		{"negative MaxKeyBytes", func(o *Options) { o.MaxKeyBytes = -1 }},
		{"negative MaxValueBytes", func(o *Options) { o.MaxValueBytes = -1 }},
		{"negative MaxWatches", func(o *Options) { o.MaxWatches = -1 }},
		{"PersistAll without Store", func(o *Options) { o.PersistAll = true }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			o := NewDefaultOptions()
			tc.mutate(&o)
			if _, err := NewEngine(o); !errors.Is(err, ErrInvalidOptions) {
				t.Errorf("NewEngine = %v, want ErrInvalidOptions", err)
			}
		})
	}
	if _, err := NewEngine(NewDefaultOptions()); err != nil {
		t.Errorf("defaults rejected: %v", err)
	}
}

func TestNotifyTopic(t *testing.T) {
	// docs/state-store-protocol.md#topics: upper-case base16 of the raw bytes; examples `client-id1`,
	// `SOMEKEY`.
	tests := []struct {
		client, key, want string
	}{
		{"client-id1", "SOMEKEY", NotifyTopicPrefix + "/636C69656E742D696431/command/notify/534F4D454B4559"},
		{"a", "\x00\xff", NotifyTopicPrefix + "/61/command/notify/00FF"},
		{"", "k", NotifyTopicPrefix + "//command/notify/6B"},
	}
	for _, tc := range tests {
		if got := NotifyTopic(tc.client, []byte(tc.key)); got != tc.want {
			t.Errorf("NotifyTopic(%q, %q) = %q, want %q", tc.client, tc.key, got, tc.want)
		}
	}
}
