// defs.h: constants shared by the fixture files (included twice: harmless).
# a '#' line followed by a blank is a comment
#define PAGE_SHIFT 12
#define LAST_PKMAP 1024     /* slots */
