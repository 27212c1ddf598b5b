// Command monitoringcheck reads YAML documents on standard input and decodes each
// monitoring.coreos.com/v1 object strictly (an unknown or mistyped field is an error)
// into prometheus-operator's Go type for its kind. It prints one line per object and
// exits 1 on the first that does not decode.
package main

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"os"
	"strings"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	"sigs.k8s.io/yaml"
)

func main() {
	data, err := io.ReadAll(bufio.NewReader(os.Stdin))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	checked := 0
	for _, doc := range bytes.Split(data, []byte("\n---")) {
		if len(bytes.TrimSpace(doc)) == 0 {
			continue
		}
		var meta struct {
			APIVersion string `json:"apiVersion"`
			Kind       string `json:"kind"`
			Metadata   struct {
				Name string `json:"name"`
			} `json:"metadata"`
		}
		if err := yaml.Unmarshal(doc, &meta); err != nil {
			fail("a document is not YAML: %v", err)
		}
		if !strings.HasPrefix(meta.APIVersion, "monitoring.coreos.com/") {
			continue
		}
		var obj any
		switch meta.Kind {
		case "ServiceMonitor":
			obj = &monitoringv1.ServiceMonitor{}
		case "PodMonitor":
			obj = &monitoringv1.PodMonitor{}
		case "PrometheusRule":
			obj = &monitoringv1.PrometheusRule{}
		default:
			fail("%s: kind not checked", meta.Kind)
		}
		if err := yaml.UnmarshalStrict(doc, obj); err != nil {
			fail("%s %s: %v", meta.Kind, meta.Metadata.Name, err)
		}
		fmt.Printf("ok %s %s\n", meta.Kind, meta.Metadata.Name)
		checked++
	}
	if checked == 0 {
		fail("no monitoring.coreos.com object in the input")
	}
}

func fail(format string, args ...any) {
	fmt.Fprintf(os.Stderr, format+"\n", args...)
	os.Exit(1)
}
