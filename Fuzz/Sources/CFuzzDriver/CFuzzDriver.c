// The declaration of libFuzzer's driver is all this module holds (include/CFuzzDriver.h).
#include "CFuzzDriver.h"
