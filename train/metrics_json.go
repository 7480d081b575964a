package train

import (
	"encoding/json"
	"fmt"
	"math"
	"strconv"
)

// jsonFloat is a float64 that survives JSON, which has no NaN or infinities:
// NaN is written as null, ±Inf as the strings "+Inf" and "-Inf", and read
// back the same way.
type jsonFloat float64

// MarshalJSON writes f as a number, null (NaN) or "+Inf"/"-Inf".
func (f jsonFloat) MarshalJSON() ([]byte, error) {
	v := float64(f)
	switch {
	case math.IsNaN(v):
		return []byte("null"), nil
	case math.IsInf(v, 1):
		return []byte(`"+Inf"`), nil
	case math.IsInf(v, -1):
		return []byte(`"-Inf"`), nil
	}
	return strconv.AppendFloat(nil, v, 'g', -1, 64), nil
}

// UnmarshalJSON reads what MarshalJSON writes.
func (f *jsonFloat) UnmarshalJSON(b []byte) error {
	switch string(b) {
	case "null":
		*f = jsonFloat(math.NaN())
		return nil
	case `"+Inf"`:
		*f = jsonFloat(math.Inf(1))
		return nil
	case `"-Inf"`:
		*f = jsonFloat(math.Inf(-1))
		return nil
	}
	v, err := strconv.ParseFloat(string(b), 64)
	if err != nil {
		return fmt.Errorf("train: JSON number %s: %w", b, err)
	}
	*f = jsonFloat(v)
	return nil
}

func toJSONFloats(v []float64) []jsonFloat {
	if v == nil {
		return nil
	}
	out := make([]jsonFloat, len(v))
	for i, x := range v {
		out[i] = jsonFloat(x)
	}
	return out
}

func fromJSONFloats(v []jsonFloat) []float64 {
	if v == nil {
		return nil
	}
	out := make([]float64, len(v))
	for i, x := range v {
		out[i] = float64(x)
	}
	return out
}

// MarshalJSON writes the curve with the leading +Inf threshold as "+Inf".
func (r ROCCurve) MarshalJSON() ([]byte, error) {
	type plain ROCCurve
	return json.Marshal(struct {
		plain
		Thresholds []jsonFloat `json:"thresholds"`
	}{plain(r), toJSONFloats(r.Thresholds)})
}

// UnmarshalJSON reads what MarshalJSON writes.
func (r *ROCCurve) UnmarshalJSON(b []byte) error {
	type plain ROCCurve
	aux := struct {
		*plain
		Thresholds []jsonFloat `json:"thresholds"`
	}{plain: (*plain)(r)}
	if err := json.Unmarshal(b, &aux); err != nil {
		return err
	}
	r.Thresholds = fromJSONFloats(aux.Thresholds)
	return nil
}

// MarshalJSON writes an undefined (NaN) AUC as null.
func (c ClassMetrics) MarshalJSON() ([]byte, error) {
	type plain ClassMetrics
	return json.Marshal(struct {
		plain
		AUC jsonFloat `json:"auc"`
	}{plain(c), jsonFloat(c.AUC)})
}

// UnmarshalJSON reads what MarshalJSON writes (null AUC as NaN).
func (c *ClassMetrics) UnmarshalJSON(b []byte) error {
	type plain ClassMetrics
	aux := struct {
		*plain
		AUC jsonFloat `json:"auc"`
	}{plain: (*plain)(c), AUC: jsonFloat(math.NaN())}
	if err := json.Unmarshal(b, &aux); err != nil {
		return err
	}
	c.AUC = float64(aux.AUC)
	return nil
}

// MarshalJSON writes an undefined (NaN) AUC as null.
func (a Averages) MarshalJSON() ([]byte, error) {
	type plain Averages
	return json.Marshal(struct {
		plain
		AUC jsonFloat `json:"auc"`
	}{plain(a), jsonFloat(a.AUC)})
}

// UnmarshalJSON reads what MarshalJSON writes (null AUC as NaN).
func (a *Averages) UnmarshalJSON(b []byte) error {
	type plain Averages
	aux := struct {
		*plain
		AUC jsonFloat `json:"auc"`
	}{plain: (*plain)(a), AUC: jsonFloat(math.NaN())}
	if err := json.Unmarshal(b, &aux); err != nil {
		return err
	}
	a.AUC = float64(aux.AUC)
	return nil
}

// MarshalJSON writes undefined (NaN) values as null.
func (iv Interval) MarshalJSON() ([]byte, error) {
	type plain Interval
	return json.Marshal(struct {
		plain
		Point jsonFloat `json:"point"`
		Lo    jsonFloat `json:"lo"`
		Hi    jsonFloat `json:"hi"`
	}{plain(iv), jsonFloat(iv.Point), jsonFloat(iv.Lo), jsonFloat(iv.Hi)})
}

// UnmarshalJSON reads what MarshalJSON writes (null as NaN).
func (iv *Interval) UnmarshalJSON(b []byte) error {
	type plain Interval
	nan := jsonFloat(math.NaN())
	aux := struct {
		*plain
		Point jsonFloat `json:"point"`
		Lo    jsonFloat `json:"lo"`
		Hi    jsonFloat `json:"hi"`
	}{plain: (*plain)(iv), Point: nan, Lo: nan, Hi: nan}
	if err := json.Unmarshal(b, &aux); err != nil {
		return err
	}
	iv.Point, iv.Lo, iv.Hi = float64(aux.Point), float64(aux.Lo), float64(aux.Hi)
	return nil
}
