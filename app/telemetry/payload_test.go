package telemetry

import (
	"errors"
	"strings"
	"testing"
	"time"
)

var testNow = time.Date(2026, 11, 27, 8, 0, 0, 0, time.UTC)

func testValidator() *Validator {
	return &Validator{Now: func() time.Time { return testNow }, MaxFutureSkew: 5 * time.Minute}
}

func TestParseValid(t *testing.T) {
	tests := []struct {
		name, data, topicDevice, messageID string
		wantID                             string
		wantSeq                            int64
		wantTS                             time.Time
		wantMetric                         string
		want                               Metric
	}{
		{
			name:   "rfc3339 with offset and fahrenheit",
			data:   `{"deviceId":"press-01","seq":42,"ts":"2026-11-27T08:00:00.5+01:00","metrics":{"temperature":{"value":212,"unit":"F"}}}`,
			wantID: "42", wantSeq: 42, wantTS: time.Date(2026, 11, 27, 7, 0, 0, 5e8, time.UTC),
			wantMetric: "temperature", want: Metric{100, "C"},
		},
		{
			name:   "epoch millis and kPa",
			data:   `{"deviceId":"press-01","seq":0,"ts":1795766400123,"metrics":{"pressure":{"value":101.325,"unit":"kPa"}}}`,
			wantID: "0", wantSeq: 0, wantTS: time.UnixMilli(1795766400123).UTC(),
			wantMetric: "pressure", want: Metric{1.01325, "bar"},
		},
		{
			name:        "message-id instead of seq, topic device matches",
			data:        `{"deviceId":"d1","ts":"2026-11-27T07:59:00Z","metrics":{"pressure":{"value":14.503773773,"unit":"psi"}}}`,
			topicDevice: "d1", messageID: "abc-1",
			wantID: "m-abc-1", wantSeq: -1, wantTS: time.Date(2026, 11, 27, 7, 59, 0, 0, time.UTC),
			wantMetric: "pressure", want: Metric{1, "bar"},
		},
		{
			name:   "kelvin",
			data:   `{"deviceId":"d1","seq":1,"ts":"2026-11-27T07:59:00Z","metrics":{"t":{"value":273.15,"unit":"K"}}}`,
			wantID: "1", wantSeq: 1, wantTS: time.Date(2026, 11, 27, 7, 59, 0, 0, time.UTC),
			wantMetric: "t", want: Metric{0, "C"},
		},
		{
			name:      "seq wins over message-id",
			data:      `{"deviceId":"d1","seq":7,"ts":"2026-11-27T08:04:00Z","metrics":{"rh":{"value":0.5,"unit":"ratio"}}}`,
			messageID: "x",
			wantID:    "7", wantSeq: 7, wantTS: time.Date(2026, 11, 27, 8, 4, 0, 0, time.UTC),
			wantMetric: "rh", want: Metric{50, "%"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r, err := testValidator().Parse([]byte(tc.data), tc.topicDevice, tc.messageID)
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if r.ID != tc.wantID || r.Seq != tc.wantSeq || !r.TS.Equal(tc.wantTS) || r.TS.Location() != time.UTC {
				t.Fatalf("got id %q seq %d ts %v; want %q %d %v", r.ID, r.Seq, r.TS, tc.wantID, tc.wantSeq, tc.wantTS)
			}
			if got := r.Metrics[tc.wantMetric]; got != tc.want {
				t.Fatalf("metric %s = %+v; want %+v", tc.wantMetric, got, tc.want)
			}
		})
	}
}

func TestParseInvalid(t *testing.T) {
	tests := []struct {
		name, data, topicDevice, messageID string
		wantInReason                       string
	}{
		{"not json", `hello`, "", "", "not the telemetry JSON"},
		{"unknown field", `{"deviceId":"d","seq":1,"ts":1795766400000,"metrics":{"t":{"value":1,"unit":"C"}},"x":1}`, "", "", "unknown field"},
		{"trailing data", `{"deviceId":"d","seq":1,"ts":1795766400000,"metrics":{"t":{"value":1,"unit":"C"}}} {}`, "", "", "trailing"},
		{"bad device id", `{"deviceId":"../x","seq":1,"ts":1795766400000,"metrics":{"t":{"value":1,"unit":"C"}}}`, "", "", "deviceId"},
		{"topic mismatch", `{"deviceId":"d","seq":1,"ts":1795766400000,"metrics":{"t":{"value":1,"unit":"C"}}}`, "e", "", "differs"},
		{"negative seq", `{"deviceId":"d","seq":-1,"ts":1795766400000,"metrics":{"t":{"value":1,"unit":"C"}}}`, "", "", "seq"},
		{"fractional seq", `{"deviceId":"d","seq":1.5,"ts":1795766400000,"metrics":{"t":{"value":1,"unit":"C"}}}`, "", "", "seq"},
		{"no identity", `{"deviceId":"d","ts":1795766400000,"metrics":{"t":{"value":1,"unit":"C"}}}`, "", "", "no message identity"},
		{"bad message id", `{"deviceId":"d","ts":1795766400000,"metrics":{"t":{"value":1,"unit":"C"}}}`, "", "a b", "message-id"},
		{"missing ts", `{"deviceId":"d","seq":1,"metrics":{"t":{"value":1,"unit":"C"}}}`, "", "", "ts is missing"},
		{"bad ts string", `{"deviceId":"d","seq":1,"ts":"yesterday","metrics":{"t":{"value":1,"unit":"C"}}}`, "", "", "RFC 3339"},
		{"ts 1970", `{"deviceId":"d","seq":1,"ts":5,"metrics":{"t":{"value":1,"unit":"C"}}}`, "", "", "before 2000"},
		{"ts future", `{"deviceId":"d","seq":1,"ts":"2026-11-27T08:06:00Z","metrics":{"t":{"value":1,"unit":"C"}}}`, "", "", "future"},
		{"no metrics", `{"deviceId":"d","seq":1,"ts":1795766400000,"metrics":{}}`, "", "", "metrics has 0"},
		{"bad metric name", `{"deviceId":"d","seq":1,"ts":1795766400000,"metrics":{"1t":{"value":1,"unit":"C"}}}`, "", "", "metric name"},
		{"missing value", `{"deviceId":"d","seq":1,"ts":1795766400000,"metrics":{"t":{"unit":"C"}}}`, "", "", "value is missing"},
		{"unknown unit", `{"deviceId":"d","seq":1,"ts":1795766400000,"metrics":{"t":{"value":1,"unit":"furlong"}}}`, "", "", `unit "furlong"`},
		{"too large", `{"deviceId":"` + strings.Repeat("a", MaxPayloadBytes) + `"}`, "", "", "bytes"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := testValidator().Parse([]byte(tc.data), tc.topicDevice, tc.messageID)
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("err = %v; want ErrInvalid", err)
			}
			if !strings.Contains(err.Error(), tc.wantInReason) {
				t.Fatalf("err = %q; want it to contain %q", err, tc.wantInReason)
			}
		})
	}
}

func TestNormalise(t *testing.T) {
	tests := []struct {
		value    float64
		unit     string
		want     float64
		wantUnit string
	}{
		{32, "F", 0, "C"},
		{-40, "°F", -40, "C"},
		{21.5, "degC", 21.5, "C"},
		{1013.25, "hPa", 1.01325, "bar"},
		{100000, "Pa", 1, "bar"},
		{0.1, "MPa", 1, "bar"},
		{1, "in/s", 25.4, "mm/s"},
		{1000, "L/min", 60, "m3/h"},
		{2.5, "kW", 2500, "W"},
		{250, "mA", 0.25, "A"},
		{3, "", 3, "count"},
	}
	for _, tc := range tests {
		got, unit, err := Normalise(tc.value, tc.unit)
		if err != nil || got != tc.want || unit != tc.wantUnit {
			t.Errorf("Normalise(%v, %q) = %v %q %v; want %v %q", tc.value, tc.unit, got, unit, err, tc.want, tc.wantUnit)
		}
	}
	if _, _, err := Normalise(1, "cubits"); err == nil || !strings.Contains(err.Error(), "psi") {
		t.Errorf("unknown unit: err = %v; want a list of accepted units", err)
	}
}
