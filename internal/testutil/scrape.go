package testutil

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// Metrics is one scrape of a Prometheus /metrics page, parsed by the Prometheus text parser.
type Metrics map[string]*dto.MetricFamily

// Scrape GETs url (a /metrics endpoint) and parses the text exposition; any failure fails t.
func Scrape(t testing.TB, url string) Metrics {
	t.Helper()
	c := &http.Client{Timeout: 10 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		t.Fatalf("scrape %s: %v", url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("scrape %s: HTTP %d", url, resp.StatusCode)
	}
	p := expfmt.NewTextParser(model.LegacyValidation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("scrape %s: %v", url, err)
	}
	return Metrics(fams)
}

// find returns the sample of family name whose labels are exactly labels (name, value pairs).
func (m Metrics) find(name string, labels ...string) (*dto.Metric, error) {
	f, ok := m[name]
	if !ok {
		return nil, fmt.Errorf("no metric family %q", name)
	}
	want := map[string]string{}
	for i := 0; i+1 < len(labels); i += 2 {
		want[labels[i]] = labels[i+1]
	}
next:
	for _, s := range f.GetMetric() {
		if len(s.GetLabel()) != len(want) {
			continue
		}
		for _, l := range s.GetLabel() {
			if v, ok := want[l.GetName()]; !ok || v != l.GetValue() {
				continue next
			}
		}
		return s, nil
	}
	return nil, fmt.Errorf("no %s{%s}", name, strings.Join(labels, ","))
}

// Has reports whether the scrape has family name with a sample labelled exactly labels.
func (m Metrics) Has(name string, labels ...string) bool {
	_, err := m.find(name, labels...)
	return err == nil
}

// Value is the value of a counter or gauge sample (labels as name, value pairs), or a histogram's
// observation count; 0 when the sample is absent (a labelled counter that has not moved yet).
func (m Metrics) Value(name string, labels ...string) float64 {
	s, err := m.find(name, labels...)
	if err != nil {
		return 0
	}
	switch {
	case s.Counter != nil:
		return s.Counter.GetValue()
	case s.Gauge != nil:
		return s.Gauge.GetValue()
	case s.Histogram != nil:
		return float64(s.Histogram.GetSampleCount())
	case s.Untyped != nil:
		return s.Untyped.GetValue()
	}
	return 0
}

// Histogram returns the histogram sample of family name (labels as name, value pairs); it fails t
// when there is none.
func (m Metrics) Histogram(t testing.TB, name string, labels ...string) *dto.Histogram {
	t.Helper()
	s, err := m.find(name, labels...)
	if err != nil || s.Histogram == nil {
		t.Fatalf("histogram %s: %v", name, err)
	}
	return s.Histogram
}
