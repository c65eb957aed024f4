package translate

import (
	"encoding/json"
	"os"
	"testing"
)

func TestScratch(t *testing.T) {
	b, _ := os.ReadFile("/work/shared/fixtures/jaeger/ui_01.json")
	var jt JaegerTrace
	if err := json.Unmarshal(b, &jt); err != nil {
		t.Fatal(err)
	}
	td, err := JaegerTraceToOTLP(jt)
	if err != nil {
		t.Fatal(err)
	}
	j, _ := OTLPJSON(td)
	t.Log(string(j))
	out := JaegerTracesFromOTLP(td)
	o, _ := json.MarshalIndent(out, "", " ")
	t.Log(string(o))
	z, _ := ZipkinJSONFromOTLP(td)
	t.Log(string(z))
}
