"""Files copied into (or formatted for) every export folder. `lora_math` is also imported by graphsurgeon itself."""
