// Command health evaluates Kubernetes objects with the health checkers GitOps
// tools really use, so Ratline's tests assert their verdicts instead of
// re-implementing them:
//
//	health kstatus < object.json       # sigs.k8s.io/cli-utils kstatus (Flux, kpt, Config Sync)
//	health argo SCRIPT.lua < object.json  # an Argo CD health Lua script, run by gopher-lua
//
// Each prints one JSON object: {"status": "...", "message": "..."}.
package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"

	lua "github.com/yuin/gopher-lua"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
)

type verdict struct {
	Status  string `json:"status"`
	Message string `json:"message"`
}

func main() {
	if len(os.Args) < 2 {
		fail("usage: health kstatus | health argo SCRIPT.lua (object JSON on stdin)")
	}
	raw, err := io.ReadAll(os.Stdin)
	if err != nil {
		fail("reading stdin: %v", err)
	}
	var obj map[string]interface{}
	if err := json.Unmarshal(raw, &obj); err != nil {
		fail("stdin is not a JSON object: %v", err)
	}
	var out verdict
	switch os.Args[1] {
	case "kstatus":
		out = kstatus(raw)
	case "argo":
		if len(os.Args) != 3 {
			fail("usage: health argo SCRIPT.lua")
		}
		out = argo(os.Args[2], obj)
	default:
		fail("unknown evaluator %q (kstatus or argo)", os.Args[1])
	}
	if err := json.NewEncoder(os.Stdout).Encode(out); err != nil {
		fail("writing the verdict: %v", err)
	}
}

func fail(format string, args ...interface{}) {
	fmt.Fprintf(os.Stderr, "health: "+format+"\n", args...)
	os.Exit(2)
}

// kstatus decodes the object as client-go does (integers stay int64), then asks
// kstatus for its verdict.
func kstatus(raw []byte) verdict {
	object := &unstructured.Unstructured{}
	if err := object.UnmarshalJSON(raw); err != nil {
		fail("kstatus: not a Kubernetes object: %v", err)
	}
	result, err := status.Compute(object)
	if err != nil {
		fail("kstatus: %v", err)
	}
	return verdict{Status: result.Status.String(), Message: result.Message}
}

// argo runs the script the way Argo CD's util/lua does: the object is the
// global `obj`, the script returns a table with `status` and `message`.
func argo(script string, obj map[string]interface{}) verdict {
	state := lua.NewState(lua.Options{SkipOpenLibs: true})
	defer state.Close()
	for _, lib := range []struct {
		name string
		open lua.LGFunction
	}{
		{lua.LoadLibName, lua.OpenPackage},
		{lua.BaseLibName, lua.OpenBase},
		{lua.TabLibName, lua.OpenTable},
		{lua.StringLibName, lua.OpenString},
		{lua.MathLibName, lua.OpenMath},
	} {
		state.Push(state.NewFunction(lib.open))
		state.Push(lua.LString(lib.name))
		state.Call(1, 0)
	}
	state.SetGlobal("obj", toLua(state, obj))
	if err := state.DoFile(script); err != nil {
		fail("argo health script: %v", err)
	}
	table, ok := state.Get(-1).(*lua.LTable)
	if !ok {
		fail("argo health script returned %s, not a table", state.Get(-1).Type())
	}
	return verdict{
		Status:  lua.LVAsString(table.RawGetString("status")),
		Message: lua.LVAsString(table.RawGetString("message")),
	}
}

func toLua(state *lua.LState, value interface{}) lua.LValue {
	switch v := value.(type) {
	case nil:
		return lua.LNil
	case bool:
		return lua.LBool(v)
	case float64:
		return lua.LNumber(v)
	case string:
		return lua.LString(v)
	case []interface{}:
		table := state.NewTable()
		for _, item := range v {
			table.Append(toLua(state, item))
		}
		return table
	case map[string]interface{}:
		table := state.NewTable()
		for key, item := range v {
			table.RawSetString(key, toLua(state, item))
		}
		return table
	default:
		fail("unexpected JSON value %T", value)
		return lua.LNil
	}
}
