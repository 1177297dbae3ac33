//! CUDA C kernel sources for the engine, embedded as text and compiled at run time with NVRTC
//! through cudarc (the CUDA backend issue). Empty until then: the CPU backend needs none.
