package pluggable

import (
	"os"
	"runtime"
	"runtime/pprof"

	"github.com/dapr/kit/logger"
)

// StartProfiles starts what the environment asks for, to profile a component process under real
// load (bench/, through daprd): MQDAPR_CPUPROFILE=<file> writes a CPU profile, MQDAPR_MEMPROFILE=<file>
// an allocation profile, both when the returned function is called (after the SDK server stopped,
// on SIGTERM). Without them it does nothing.
func StartProfiles(log logger.Logger) (stop func()) {
	cpuFile, memFile := os.Getenv("MQDAPR_CPUPROFILE"), os.Getenv("MQDAPR_MEMPROFILE")
	var cpu *os.File
	if cpuFile != "" {
		f, err := os.Create(cpuFile)
		if err == nil {
			err = pprof.StartCPUProfile(f)
		}
		if err != nil {
			log.Warnf("MQDAPR_CPUPROFILE=%s: not profiling: %v", cpuFile, err)
		} else {
			cpu = f
		}
	}
	return func() {
		if cpu != nil {
			pprof.StopCPUProfile()
			_ = cpu.Close()
		}
		if memFile == "" {
			return
		}
		f, err := os.Create(memFile)
		if err == nil {
			runtime.GC()
			err = pprof.Lookup("allocs").WriteTo(f, 0)
			_ = f.Close()
		}
		if err != nil {
			log.Warnf("MQDAPR_MEMPROFILE=%s: %v", memFile, err)
		}
	}
}
