package healthcheck

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
)

// HTTP probes url with a GET: healthy on a 2xx answer; otherwise the status and the first line of
// the body (a /healthz handler's reason) make the error.
func HTTP(ctx context.Context, url string) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return "", err
	}
	req.Close = true // one probe, one connection: nothing idle is left behind
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	line, _, _ := strings.Cut(strings.TrimSpace(string(body)), "\n")
	if resp.StatusCode/100 != 2 {
		return "", fmt.Errorf("%s: HTTP %d %s", url, resp.StatusCode, line)
	}
	return fmt.Sprintf("%s: HTTP %d", url, resp.StatusCode), nil
}
