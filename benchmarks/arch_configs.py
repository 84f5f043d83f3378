"""Architectures the editor benchmarks open on meta (their config.json as published): plain data, no side effects,
so tests can read them too."""

# Llama-3-70B's architecture (meta-llama/Meta-Llama-3-70B config.json): not a preset, nothing is downloaded.
LLAMA3_70B = {
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 8192, "intermediate_size": 28672,
    "num_hidden_layers": 80, "num_attention_heads": 64, "num_key_value_heads": 8, "vocab_size": 128256,
    "max_position_embeddings": 8192, "rms_norm_eps": 1e-5, "rope_theta": 500000.0, "hidden_act": "silu",
    "attention_bias": False, "tie_word_embeddings": False, "bos_token_id": 128000, "eos_token_id": 128001,
    "torch_dtype": "bfloat16",
}
# Llama-3.1-405B's architecture (meta-llama/Llama-3.1-405B config.json): 126 layers, hidden 16384.
LLAMA31_405B = {**LLAMA3_70B, "hidden_size": 16384, "intermediate_size": 53248, "num_hidden_layers": 126,
                "num_attention_heads": 128, "num_key_value_heads": 8, "max_position_embeddings": 131072,
                "rope_scaling": {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                 "original_max_position_embeddings": 8192, "rope_type": "llama3"}}
