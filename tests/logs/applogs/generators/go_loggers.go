package main

import (
	"errors"
	"fmt"
	"os"

	"github.com/sirupsen/logrus"
	"go.uber.org/zap"
)

type item struct{ n int }

func main() {
	if len(os.Args) > 1 && os.Args[1] == "panic" {
		var m map[string]*item
		fmt.Println(m["x"].n)
	}
	if len(os.Args) > 1 && os.Args[1] == "panic2" {
		panic(fmt.Errorf("order %d: %w", 42, errors.New("connection refused")))
	}
	z, _ := zap.NewProduction()
	z.Info("started", zap.Int("port", 8080))
	for _, id := range []int{1, 2} {
		z.Error("request failed", zap.Error(fmt.Errorf("dial tcp 10.0.0.%d:5432: connect: connection refused", id)), zap.Int("order", id))
	}
	z.Warn("slow query 1234 ms")
	z.DPanic("impossible state", zap.Error(errors.New("cart 7 has no owner")))
	z.Sync()
	l := logrus.New()
	l.SetFormatter(&logrus.JSONFormatter{})
	l.SetOutput(os.Stdout)
	l.Info("started")
	for _, id := range []int{1, 2} {
		l.WithError(fmt.Errorf("dial tcp 10.0.0.%d:5432: connect: connection refused", id)).WithField("order", id).Error("request failed")
	}
	l.Warn("slow query")
	t := logrus.New()
	t.SetOutput(os.Stdout)
	t.SetFormatter(&logrus.TextFormatter{DisableColors: true, FullTimestamp: true})
	t.WithError(errors.New("boom 7")).Error("request failed")
}
