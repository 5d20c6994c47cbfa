package mdparse

import (
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

type inner struct {
	Host string `mapstructure:"host"`
}

type sample struct {
	inner   `mapstructure:",squash"`
	Name    string        `mapstructure:"name"`
	On      bool          `mapstructure:"on"`
	QoS     uint8         `mapstructure:"qos"`
	Recv    uint16        `mapstructure:"receiveMaximum"`
	Retries int           `mapstructure:"maxRetries"`
	Wait    time.Duration `mapstructure:"wait"`
	TLS     *bool         `mapstructure:"useTls"`
	Ignored string
}

func TestDecode(t *testing.T) {
	s := sample{Name: "default", Recv: 10}
	unknown, err := Decode(map[string]string{
		"HOST": "h", "on": "Yes", "qos": "1", "receivemaximum": "65535", "maxRetries": "-1",
		"wait": "90", "useTls": "false", "consumerID": "x", "bogus": "y",
	}, &s)
	require.NoError(t, err)
	assert.Equal(t, []string{"bogus", "consumerID"}, unknown)
	assert.Equal(t, "h", s.Host)
	assert.Equal(t, "default", s.Name, "absent keys keep their default")
	assert.True(t, s.On)
	assert.Equal(t, uint8(1), s.QoS)
	assert.Equal(t, uint16(65535), s.Recv)
	assert.Equal(t, -1, s.Retries)
	assert.Equal(t, 90*time.Second, s.Wait)
	require.NotNil(t, s.TLS)
	assert.False(t, *s.TLS)
}

func TestDecodeErrorsNameKeyAndAcceptedValues(t *testing.T) {
	for _, tc := range []struct {
		props map[string]string
		want  string
	}{
		{map[string]string{"on": "banana"}, `on="banana": want true or false`},
		{map[string]string{"receiveMaximum": "65536"}, `receiveMaximum="65536": want a whole number from 0 to 65535`},
		{map[string]string{"qos": "-1"}, `qos="-1": want a whole number from 0 to 255`},
		{map[string]string{"maxRetries": "x"}, `maxRetries="x": want a whole number from`},
		{map[string]string{"wait": "soon"}, `wait="soon": want a duration`},
		{map[string]string{"wait": "-5s"}, `wait="-5s": want a duration`},
		{map[string]string{"useTls": "maybe"}, `useTls="maybe": want true or false`},
		{map[string]string{"qos": "1", "QOS": "0"}, `differ only in case`},
	} {
		var s sample
		_, err := Decode(tc.props, &s)
		require.Error(t, err, "%v", tc.props)
		assert.ErrorIs(t, err, ErrInvalid)
		assert.Contains(t, err.Error(), tc.want)
	}
}

func TestDecodeNeedsStructPointer(t *testing.T) {
	_, err := Decode(nil, sample{})
	require.Error(t, err)
	assert.False(t, errors.Is(err, ErrInvalid))
}

func TestKeys(t *testing.T) {
	assert.Equal(t, []string{"host", "maxRetries", "name", "on", "qos", "receiveMaximum", "useTls", "wait"}, Keys(&sample{}))
}

func TestWithoutDaprdKeys(t *testing.T) {
	assert.Equal(t, []string{"bogus"}, WithoutDaprdKeys([]string{"consumerid", "bogus", "keyPrefix", "publishingScopes"}))
	assert.Empty(t, WithoutDaprdKeys(nil))
}
