package main

import (
	"fmt"
	"os"

	"github.com/sirupsen/logrus"
)

func main() {
	// logrus's default TextFormatter, writing to a file (no TTY): logfmt, no colours
	l := logrus.New()
	l.SetOutput(os.Stdout)
	l.Info("server started")
	for _, id := range []int{1, 2} {
		l.WithError(fmt.Errorf("dial tcp 10.0.0.%d:5432: connect: connection refused", id)).WithField("order", id).Error("request failed")
	}
	l.WithField("ms", 1234).Warn("slow query")
	l.WithError(fmt.Errorf(`parse "%s": invalid URI`, "http://x y")).Error("bad \"callback\" URL")
}
