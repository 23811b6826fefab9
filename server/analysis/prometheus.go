package analysis

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Series is one series of an instant query's result.
type Series struct {
	Labels string // {job="web",instance="web-1:9100"}; {} for a scalar or a series without labels
	Value  float64
}

// Prometheus queries a Prometheus server's HTTP API v1.
type Prometheus struct {
	URL         string // base URL, e.g. http://127.0.0.1:9090 (a path prefix is kept)
	BearerToken string // Authorization: Bearer, if set
	Username    string // or basic auth, if set
	Password    string
	Timeout     time.Duration // per query; default 10s
	Client      *http.Client  // nil: http.DefaultClient
}

// ErrQuery is wrapped by every error of Query: Prometheus unreachable, an
// error answer, or an answer that is not an instant query's.
var ErrQuery = errors.New("prometheus query")

// apiResponse is the envelope of every API v1 answer.
type apiResponse struct {
	Status    string          `json:"status"`
	ErrorType string          `json:"errorType"`
	Error     string          `json:"error"`
	Data      json.RawMessage `json:"data"`
}

type queryData struct {
	ResultType string          `json:"resultType"`
	Result     json.RawMessage `json:"result"`
}

type vectorSample struct {
	Metric map[string]string `json:"metric"`
	Value  [2]any            `json:"value"`
}

// Query runs an instant query at time at (GET /api/v1/query).
func (p *Prometheus) Query(ctx context.Context, query string, at time.Time) ([]Series, error) {
	body, err := p.get(ctx, query, at)
	if err != nil {
		return nil, err
	}
	var r apiResponse
	if err := json.Unmarshal(body, &r); err != nil {
		return nil, fmt.Errorf("%w: answer is not the API's JSON: %v", ErrQuery, err)
	}
	if r.Status != "success" {
		return nil, fmt.Errorf("%w: %s: %s", ErrQuery, r.ErrorType, r.Error)
	}
	var d queryData
	if err := json.Unmarshal(r.Data, &d); err != nil {
		return nil, fmt.Errorf("%w: data: %v", ErrQuery, err)
	}
	return decodeResult(d)
}

func (p *Prometheus) get(ctx context.Context, query string, at time.Time) ([]byte, error) {
	timeout := p.Timeout
	if timeout <= 0 {
		timeout = 10 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	q := url.Values{"query": {query}, "time": {strconv.FormatFloat(float64(at.UnixMilli())/1000, 'f', 3, 64)}}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimSuffix(p.URL, "/")+"/api/v1/query?"+q.Encode(), nil)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrQuery, err)
	}
	switch {
	case p.BearerToken != "":
		req.Header.Set("Authorization", "Bearer "+p.BearerToken)
	case p.Username != "":
		req.SetBasicAuth(p.Username, p.Password)
	}
	client := p.Client
	if client == nil {
		client = http.DefaultClient
	}
	resp, err := client.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // its text holds the whole URL
		}
		return nil, fmt.Errorf("%w: unreachable: %v", ErrQuery, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return nil, fmt.Errorf("%w: reading the answer: %v", ErrQuery, err)
	}
	if resp.StatusCode/100 != 2 {
		var r apiResponse
		if json.Unmarshal(body, &r) == nil && r.Error != "" {
			return nil, fmt.Errorf("%w: HTTP %d: %s: %s", ErrQuery, resp.StatusCode, r.ErrorType, r.Error)
		}
		return nil, fmt.Errorf("%w: HTTP %d", ErrQuery, resp.StatusCode)
	}
	return body, nil
}

// decodeResult reads a vector or a scalar.
func decodeResult(d queryData) ([]Series, error) {
	switch d.ResultType {
	case "vector":
		var samples []vectorSample
		if err := json.Unmarshal(d.Result, &samples); err != nil {
			return nil, fmt.Errorf("%w: vector: %v", ErrQuery, err)
		}
		out := make([]Series, 0, len(samples))
		for _, s := range samples {
			v, err := sampleValue(s.Value)
			if err != nil {
				return nil, err
			}
			out = append(out, Series{Labels: labelString(s.Metric), Value: v})
		}
		return out, nil
	case "scalar":
		var pair [2]any
		if err := json.Unmarshal(d.Result, &pair); err != nil {
			return nil, fmt.Errorf("%w: scalar: %v", ErrQuery, err)
		}
		v, err := sampleValue(pair)
		if err != nil {
			return nil, err
		}
		return []Series{{Labels: "{}", Value: v}}, nil
	}
	return nil, fmt.Errorf("%w: result type %q: want an instant vector or a scalar (not a range query)", ErrQuery, d.ResultType)
}

// sampleValue reads [unix time, "value"]; "NaN" and "±Inf" are numbers
// here (the condition calls them inconclusive).
func sampleValue(pair [2]any) (float64, error) {
	s, ok := pair[1].(string)
	if !ok {
		return 0, fmt.Errorf("%w: sample value %v is not a string", ErrQuery, pair[1])
	}
	v, err := strconv.ParseFloat(s, 64)
	if err != nil {
		return 0, fmt.Errorf("%w: sample value %q: %v", ErrQuery, s, err)
	}
	return v, nil
}

func labelString(m map[string]string) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s=%q", k, m[k])
	}
	return "{" + strings.Join(parts, ",") + "}"
}
