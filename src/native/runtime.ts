// Native surface: runtime.

export interface RuntimeInfo {
  libtorchVersion: string;
  torchSource: string;
  threads: number;
  interopThreads: number;
  cores: number;
  blasLibraries: string[];
  parallelInfo: string;
  buildConfig: string;
  cuda: {
    built: boolean;
    available: boolean;
    devices: { index: number; name: string; capability: string; memoryBytes: number }[];
  };
}
