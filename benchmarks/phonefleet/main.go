// Phone-fleet load generator: each device posts one fix per request at its own period.
//
// A compiled client, so that the load generator's own CPU does not decide the figure:
// goroutines share keep-alive connections (net/http's pool), one ping per request, as
// phones send them. About --catchup of the devices send one catch-up batch of 10-200
// pings once, after a simulated gap. Writes a JSON summary on stdout at the end.
//
// With --transport ws each device keeps one telemetry WebSocket (/v1/telemetry/stream) open
// instead and waits for each batch's ack, as the driver app does.
//
//	phonefleet --url http://127.0.0.1:8080 --tokens tokens.txt --duration 60s --period-min 1s --period-max 5s
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"math/rand"
	"net/http"
	"os"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
)

type device struct {
	id, token string
	seq       int64
	lat, lon  float64
	accepted  int64 // the last seq answered 202 (with --retry every fix up to it was)
	nAccepted int64
}

type stats struct {
	mu        sync.Mutex
	latencies []time.Duration
	byStatus  map[int]int64
	requests  atomic.Int64
	pings     atomic.Int64
	netErrors atomic.Int64
	retries   atomic.Int64
	refused   map[int]int64 // answers to attempts that were retried (status 0: no answer)
}

func (s *stats) record(code int, d time.Duration, pings int) {
	s.mu.Lock()
	s.byStatus[code]++
	s.latencies = append(s.latencies, d)
	s.mu.Unlock()
	if code == 200 || code == 202 {
		s.pings.Add(int64(pings))
	}
}

func main() {
	url := flag.String("url", "http://127.0.0.1:8080", "base URL (nginx)")
	tokens := flag.String("tokens", "", "file: driver id and device token per line")
	duration := flag.Duration("duration", 60*time.Second, "load duration")
	pmin := flag.Duration("period-min", time.Second, "shortest period between a device's fixes")
	pmax := flag.Duration("period-max", 5*time.Second, "longest period")
	catchup := flag.Float64("catchup", 0.05, "share of devices sending one catch-up batch")
	format := flag.String("format", "json", "json (POST /v1/telemetry) or osmand (POST /v1/osmand/{token})")
	conns := flag.Int("conns", 256, "keep-alive connections")
	transport := flag.String("transport", "http", "http (one POST per fix) or ws (one telemetry WebSocket per device)")
	retry := flag.Bool("retry", false, "resend a fix not answered 202 (no answer, 429, 5xx) as it was, as a phone does")
	grace := flag.Duration("grace", 60*time.Second, "with --retry: how long past the deadline a device keeps resending")
	acceptedOut := flag.String("accepted", "", "file: write each device's last accepted seq and accepted count")
	flag.Parse()

	devs := readTokens(*tokens)
	tr := &http.Transport{MaxIdleConns: *conns, MaxIdleConnsPerHost: *conns, MaxConnsPerHost: *conns,
		IdleConnTimeout: 90 * time.Second}
	client := &http.Client{Transport: tr, Timeout: 30 * time.Second}
	st := &stats{byStatus: map[int]int64{}, refused: map[int]int64{}}
	start := time.Now()
	deadline := start.Add(*duration)
	var wg sync.WaitGroup
	for i := range devs {
		wg.Add(1)
		go func(d *device, r *rand.Rand) {
			defer wg.Done()
			period := *pmin + time.Duration(r.Int63n(int64(*pmax-*pmin)+1))
			time.Sleep(time.Duration(r.Int63n(int64(period)))) // devices do not start in step
			catchUpAt := time.Time{}
			if r.Float64() < *catchup {
				catchUpAt = start.Add(time.Duration(r.Int63n(int64(*duration))))
			}
			var ws *websocket.Conn
			defer func() {
				if ws != nil {
					ws.Close(websocket.StatusNormalClosure, "done")
				}
			}()
			for time.Now().Before(deadline) {
				n := 1
				if !catchUpAt.IsZero() && time.Now().After(catchUpAt) && *format == "json" {
					// Offline for n seconds (a tunnel, no signal), then the fixes of the gap in one request.
					n = 10 + r.Intn(191)
					catchUpAt = time.Time{}
					gap := time.Duration(n) * time.Second
					if left := time.Until(deadline); gap >= left {
						return // the gap outlasts the run: this device stays offline
					}
					time.Sleep(gap)
				}
				t0 := time.Now()
				var code int
				if *transport == "ws" {
					if ws == nil {
						ws = dial(*url, d.token)
					}
					if ws != nil {
						code = sendWS(ws, d, n, t0, r)
					}
					if code == 0 { // broken: dial again at the next fix
						st.netErrors.Add(1)
						if ws != nil {
							ws.CloseNow()
						}
						ws = nil
					}
				} else if *retry && *format == "json" {
					body := jsonBody(d, n, t0, r)
					code = send(client, *url, d, body)
					backoff := 200 * time.Millisecond
					for retriable(code) && time.Now().Before(deadline.Add(*grace)) {
						st.mu.Lock()
						st.refused[code]++
						st.mu.Unlock()
						st.retries.Add(1)
						time.Sleep(backoff)
						backoff = min(2*backoff, 2*time.Second)
						code = send(client, *url, d, body)
					}
					if code == 202 {
						d.accepted = d.seq
						d.nAccepted += int64(n)
					}
				} else {
					code = post(client, *url, *format, d, n, t0, r)
				}
				st.record(code, time.Since(t0), n)
				st.requests.Add(1)
				jitter := time.Duration(float64(period) * (0.9 + 0.2*r.Float64()))
				if sleep := jitter - time.Since(t0); sleep > 0 {
					time.Sleep(sleep)
				}
			}
		}(&devs[i], rand.New(rand.NewSource(int64(i))))
	}
	wg.Wait()
	elapsed := min(time.Since(start), *duration).Seconds() // a request still open at the deadline ends after it
	sort.Slice(st.latencies, func(a, b int) bool { return st.latencies[a] < st.latencies[b] })
	pct := func(p float64) float64 {
		if len(st.latencies) == 0 {
			return 0
		}
		return float64(st.latencies[int(p*float64(len(st.latencies)-1))].Microseconds()) / 1000
	}
	codes := map[string]int64{}
	for k, v := range st.byStatus {
		codes[fmt.Sprint(k)] = v
	}
	refused := map[string]int64{}
	for k, v := range st.refused {
		refused[fmt.Sprint(k)] = v
	}
	if *acceptedOut != "" {
		var b bytes.Buffer
		for i := range devs {
			fmt.Fprintf(&b, "%s %d %d\n", devs[i].id, devs[i].accepted, devs[i].nAccepted)
		}
		if err := os.WriteFile(*acceptedOut, b.Bytes(), 0o644); err != nil {
			panic(err)
		}
	}
	out := map[string]any{
		"devices": len(devs), "elapsed_s": elapsed, "requests": st.requests.Load(),
		"requests_per_s": float64(st.requests.Load()) / elapsed, "pings_accepted": st.pings.Load(),
		"pings_accepted_per_s": float64(st.pings.Load()) / elapsed, "status": codes,
		"transport": *transport, "net_errors": st.netErrors.Load(),
		"retries": st.retries.Load(), "retried_status": refused,
		"latency_ms": map[string]float64{"p50": pct(0.5), "p90": pct(0.9), "p99": pct(0.99), "max": pct(1)},
	}
	json.NewEncoder(os.Stdout).Encode(out)
}

func readTokens(path string) []device {
	f, err := os.Open(path)
	if err != nil {
		panic(err)
	}
	defer f.Close()
	var devs []device
	sc := bufio.NewScanner(f)
	for i := 0; sc.Scan(); i++ {
		parts := strings.Fields(sc.Text())
		if len(parts) != 2 {
			continue
		}
		// Spread over the benchmark city (about 12 x 12 km around 52.52, 13.40).
		devs = append(devs, device{id: parts[0], token: parts[1], lat: 52.46 + float64(i%97)*0.0012,
			lon: 13.31 + float64(i%89)*0.002})
	}
	return devs
}

func post(c *http.Client, base, format string, d *device, n int, now time.Time, r *rand.Rand) int {
	if format != "osmand" {
		return send(c, base, d, jsonBody(d, n, now, r))
	}
	d.lat += (r.Float64() - 0.5) * 1e-4
	d.lon += (r.Float64() - 0.5) * 1e-4
	q := fmt.Sprintf("%s/v1/osmand/%s?id=%s&timestamp=%d&lat=%.6f&lon=%.6f&speed=%.1f&bearing=%.0f&accuracy=5",
		base, d.token, d.id, now.UnixMilli(), d.lat, d.lon, r.Float64()*20, r.Float64()*359)
	req, _ := http.NewRequest("POST", q, nil)
	return do(c, req)
}

// retriable: no answer, too many requests, or a server error: the fix may not be stored yet.
func retriable(code int) bool {
	return code == 0 || code == 429 || code >= 500
}

func jsonBody(d *device, n int, now time.Time, r *rand.Rand) []byte {
	var b bytes.Buffer
	b.WriteString(`{"pings":`)
	writePings(&b, d, n, now, r)
	b.WriteString(`}`)
	return b.Bytes()
}

func send(c *http.Client, base string, d *device, body []byte) int {
	req, _ := http.NewRequest("POST", base+"/v1/telemetry", bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+d.token)
	return do(c, req)
}

// do sends req and returns its status (0: no answer), the body read so the connection is reused.
func do(c *http.Client, req *http.Request) int {
	resp, err := c.Do(req)
	if err != nil {
		return 0
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

// writePings appends n fixes of d, the last one at now, as a JSON array.
func writePings(b *bytes.Buffer, d *device, n int, now time.Time, r *rand.Rand) {
	b.WriteByte('[')
	for i := 0; i < n; i++ {
		if i > 0 {
			b.WriteByte(',')
		}
		d.seq++
		d.lat += (r.Float64() - 0.5) * 1e-4
		d.lon += (r.Float64() - 0.5) * 1e-4
		ts := now.Add(time.Duration(i-n+1) * time.Second).UTC().Format("2006-01-02T15:04:05.000Z")
		fmt.Fprintf(b, `{"seq":%d,"ts":"%s","lat":%.6f,"lon":%.6f,"accuracy_m":5,"speed_mps":%.1f}`,
			d.seq, ts, d.lat, d.lon, r.Float64()*15)
	}
	b.WriteByte(']')
}

func dial(base, token string) *websocket.Conn {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	u := "ws" + strings.TrimPrefix(base, "http") + "/v1/telemetry/stream?token=" + token
	c, _, err := websocket.Dial(ctx, u, nil)
	if err != nil {
		return nil
	}
	return c
}

// sendWS sends one batch and waits for its ack: the ack's status, or 0 if the socket broke.
func sendWS(c *websocket.Conn, d *device, n int, now time.Time, r *rand.Rand) int {
	var b bytes.Buffer
	fmt.Fprintf(&b, `{"batch_id":%d,"pings":`, d.seq+1)
	writePings(&b, d, n, now, r)
	b.WriteByte('}')
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := c.Write(ctx, websocket.MessageText, b.Bytes()); err != nil {
		return 0
	}
	_, data, err := c.Read(ctx)
	if err != nil {
		return 0
	}
	var ack struct {
		Status int `json:"status"`
	}
	if json.Unmarshal(data, &ack) != nil {
		return 0
	}
	return ack.Status
}
