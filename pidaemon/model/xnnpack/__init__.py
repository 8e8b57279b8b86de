"""The `xnnpack` engine: the model lowered to an XNNPACK int8 ExecuTorch program (export), kept in
the model cache (cache), run by ExecuTorch's runtime (runtime) in a child process (child), and
loaded for the daemon (loader)."""

ENGINE = "xnnpack"  # its name in inference.engine and in every output
