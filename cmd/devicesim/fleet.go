package main

import (
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"strconv"
	"time"
)

// device simulates one sensor box: temperature in °F, pressure in kPa or psi, vibration in mm/s,
// each a bounded random walk. Not safe for concurrent use.
type device struct {
	id      string
	asset   string
	seq     int64
	tempF   float64
	press   float64 // in the device's own unit
	psi     bool    // pressure unit: psi, else kPa
	vib     float64
	epochTS bool // ts as epoch milliseconds, else RFC 3339
}

// asset is the retained configuration published on <config prefix>/<assetId>.
type asset struct {
	AssetID    string            `json:"assetId"`
	Site       string            `json:"site"`
	Line       string            `json:"line"`
	Devices    []string          `json:"devices"`
	Attributes map[string]string `json:"attributes,omitempty"`
}

// fleet is the simulated devices and their assets.
type fleet struct {
	devices []*device
	assets  []asset
	rng     *rand.Rand
}

// newFleet makes n devices spread over nAssets assets (round robin), with sequence numbers
// starting at seqStart.
func newFleet(n, nAssets int, seqStart int64, seed uint64) *fleet {
	f := &fleet{rng: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))}
	if nAssets < 1 {
		nAssets = 1
	}
	for a := range nAssets {
		f.assets = append(f.assets, asset{
			AssetID:    fmt.Sprintf("press-%02d", a+1),
			Site:       "plant-a",
			Line:       fmt.Sprintf("line-%d", a%3+1),
			Attributes: map[string]string{"model": "HX-200", "source": "devicesim"},
		})
	}
	for i := range n {
		a := &f.assets[i%nAssets]
		d := &device{
			id: fmt.Sprintf("dev-%03d", i+1), asset: a.AssetID, seq: seqStart,
			tempF: 150 + f.rng.Float64()*20, psi: i%2 == 1, vib: 2 + f.rng.Float64(), epochTS: i%3 == 2,
		}
		d.press = 250 + f.rng.Float64()*20 // kPa
		if d.psi {
			d.press = d.press * 0.145038
		}
		a.Devices = append(a.Devices, d.id)
		f.devices = append(f.devices, d)
	}
	return f
}

// walk moves v by a random step of at most step, within [lo, hi].
func (f *fleet) walk(v, step, lo, hi float64) float64 {
	v += (f.rng.Float64()*2 - 1) * step
	return math.Min(hi, math.Max(lo, v))
}

// next returns the next telemetry payload of d at time now, and its sequence number. With
// withSeq false the payload has no seq (the publisher then sets the message-id user property).
func (f *fleet) next(d *device, now time.Time, withSeq bool) ([]byte, int64) {
	d.tempF = f.walk(d.tempF, 0.8, 120, 200)
	d.vib = f.walk(d.vib, 0.2, 0.5, 12)
	pressUnit, step, lo, hi := "kPa", 2.0, 150.0, 400.0
	if d.psi {
		pressUnit, step, lo, hi = "psi", 0.3, 20, 60
	}
	d.press = f.walk(d.press, step, lo, hi)
	seq := d.seq
	d.seq++
	var ts any = now.UTC().Format(time.RFC3339Nano)
	if d.epochTS {
		ts = now.UnixMilli()
	}
	p := map[string]any{
		"deviceId": d.id,
		"ts":       ts,
		"metrics": map[string]any{
			"temperature": map[string]any{"value": round2(d.tempF), "unit": "F"},
			"pressure":    map[string]any{"value": round2(d.press), "unit": pressUnit},
			"vibration":   map[string]any{"value": round2(d.vib), "unit": "mm/s"},
		},
	}
	if withSeq {
		p["seq"] = seq
	}
	b, _ := json.Marshal(p) // maps of strings and numbers: cannot fail
	return b, seq
}

// invalid returns a payload the connector must reject (unknown unit), for the dead-letter demo.
func invalid(d *device, now time.Time) []byte {
	return []byte(`{"deviceId":"` + d.id + `","seq":` + strconv.FormatInt(d.seq, 10) + `,"ts":` +
		strconv.FormatInt(now.UnixMilli(), 10) + `,"metrics":{"temperature":{"value":1,"unit":"furlong"}}}`)
}

func round2(v float64) float64 { return math.Round(v*100) / 100 }
