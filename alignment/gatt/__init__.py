"""Ghost Attention (Llama 2 §3.3) as a library: `dialogues` builds the sampling and training forms
of instructed dialogues, `evaluation` measures instruction adherence turn by turn. The stage is
alignment/stages/gatt.py and the gym's checkable instructions are alignment/gym/gatt_instructions.py."""
