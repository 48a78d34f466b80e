// lib.S: second file of the fixture; pulls in a helper from inc/.
#include "inc/helpers.inc"

lib_entry:
        call kmap_atomic
        push offset pkmap_count
        call helper
        jmp lib_entry
