package pubsubmqtt5

import "errors"

var (
	// ErrNotInitialized is returned by every method called before a successful Init (daprd does not
	// re-initialise a component process that restarted: restart daprd with it).
	ErrNotInitialized = errors.New("mqttv5 pub/sub: component not initialised (Init has not succeeded; if the component restarted, restart daprd too)")
	// ErrClosed is returned after Close.
	ErrClosed = errors.New("mqttv5 pub/sub: component closed")
	// ErrInvalidMetadata is wrapped by component and per-request metadata errors.
	ErrInvalidMetadata = errors.New("mqttv5 pub/sub: invalid metadata")
	// ErrInvalidTopic is wrapped by errors about a topic name or filter.
	ErrInvalidTopic = errors.New("mqttv5 pub/sub: invalid topic")
	// ErrMessageTooLarge is returned when a publish exceeds the broker's Maximum Packet Size.
	ErrMessageTooLarge = errors.New("mqttv5 pub/sub: message too large")
	// ErrPublishRefused is returned when the broker answers a publish with a failure reason code.
	ErrPublishRefused = errors.New("mqttv5 pub/sub: broker refused the publish")
	// ErrNoSubscribers is returned when the broker answered PUBACK 0x10 "no matching subscribers"
	// (it discarded the message) and noMatchingSubscribers is "fail". Retriable: once a subscriber
	// (or a persistent session holding a subscription) exists, the same publish succeeds.
	ErrNoSubscribers = errors.New("mqttv5 pub/sub: no subscriber for the topic: the broker discarded the message (PUBACK 0x10)")
	// ErrPublishFailed is returned when the PUBACK did not arrive (connection lost, time-out); the
	// message may or may not have reached the broker, so a retry can duplicate it.
	ErrPublishFailed = errors.New("mqttv5 pub/sub: publish not acknowledged")
	// ErrSubscribeRefused is returned when the broker refuses a subscription in its SUBACK.
	ErrSubscribeRefused = errors.New("mqttv5 pub/sub: broker refused the subscription")
)
