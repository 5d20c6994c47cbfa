package telemetry

import (
	"fmt"
	"math"
	"sort"
	"strings"
)

// conversion maps a unit to its canonical unit.
type conversion struct {
	canonical string
	convert   func(float64) float64
}

func scale(f float64) func(float64) float64 { return func(v float64) float64 { return v * f } }

func same(v float64) float64 { return v }

// units is the closed set of accepted units (case-sensitive, as SI writes them). It is read-only.
var units = map[string]conversion{
	// temperature → °C
	"C": {"C", same}, "degC": {"C", same}, "°C": {"C", same},
	"F":  {"C", func(v float64) float64 { return (v - 32) * 5 / 9 }},
	"°F": {"C", func(v float64) float64 { return (v - 32) * 5 / 9 }},
	"K":  {"C", func(v float64) float64 { return v - 273.15 }},
	// pressure → bar
	"bar": {"bar", same}, "mbar": {"bar", scale(1e-3)}, "hPa": {"bar", scale(1e-3)},
	"kPa": {"bar", scale(1e-2)}, "Pa": {"bar", scale(1e-5)}, "MPa": {"bar", scale(10)},
	"psi": {"bar", scale(0.0689475729)},
	// relative humidity, ratios → %
	"%": {"%", same}, "%RH": {"%", same}, "ratio": {"%", scale(100)},
	// vibration velocity → mm/s
	"mm/s": {"mm/s", same}, "in/s": {"mm/s", scale(25.4)},
	// flow → m3/h
	"m3/h": {"m3/h", same}, "L/min": {"m3/h", scale(0.06)}, "gpm": {"m3/h", scale(0.227124707)},
	// electrical, rotation, frequency
	"V": {"V", same}, "mV": {"V", scale(1e-3)}, "A": {"A", same}, "mA": {"A", scale(1e-3)},
	"W": {"W", same}, "kW": {"W", scale(1e3)},
	"rpm": {"rpm", same}, "Hz": {"Hz", same},
	// counts
	"count": {"count", same}, "": {"count", same},
}

// Normalise converts value from unit to its canonical unit, rounded to 9 significant decimals so
// that conversions do not invent precision (e.g. 212 F → 100 C exactly). An unknown unit is an
// error listing the accepted ones.
func Normalise(value float64, unit string) (float64, string, error) {
	c, ok := units[unit]
	if !ok {
		return 0, "", fmt.Errorf("unit %q is not supported; want one of %s", unit, strings.Join(knownUnits(), ", "))
	}
	return round9(c.convert(value)), c.canonical, nil
}

func round9(v float64) float64 {
	const p = 1e9
	r := math.Round(v*p) / p
	if math.IsInf(r, 0) || math.IsNaN(r) { // too large to round this way: keep as is
		return v
	}
	return r
}

func knownUnits() []string {
	out := make([]string, 0, len(units))
	for u := range units {
		if u != "" {
			out = append(out, u)
		}
	}
	sort.Strings(out)
	return out
}
