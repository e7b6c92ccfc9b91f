# Shared by the toolchain files in this folder: a Debian cross compiler for
# ESGD_CROSS_TRIPLET with the target's libraries installed as multiarch
# packages (libfoo-dev:<arch>). Headers of those packages live in
# /usr/include (architecture-independent) and /usr/include/<triplet>,
# libraries, CMake package files and pkg-config files in /usr/lib/<triplet>.
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_C_COMPILER ${ESGD_CROSS_TRIPLET}-gcc)
set(CMAKE_LIBRARY_ARCHITECTURE ${ESGD_CROSS_TRIPLET})

# Search the target's multiarch folders of the whole system; programs
# (pkg-config, tools) are the build machine's.
set(CMAKE_FIND_ROOT_PATH /)
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE ONLY)
# Never pick up the build machine's own libraries or CMake package files.
if(CMAKE_HOST_SYSTEM_PROCESSOR STREQUAL "x86_64")
  list(APPEND CMAKE_IGNORE_PATH /usr/lib/x86_64-linux-gnu /usr/lib/x86_64-linux-gnu/cmake)
endif()

# The target's programs run on the build machine under qemu-user-static when
# it is installed (qemu-aarch64-static, qemu-arm-static): CTest then runs the
# unit tests through it (scripts/arm-check.sh). Without it nothing changes.
find_program(ESGD_QEMU NAMES qemu-${CMAKE_SYSTEM_PROCESSOR}-static qemu-${CMAKE_SYSTEM_PROCESSOR})
if(ESGD_QEMU)
  set(CMAKE_CROSSCOMPILING_EMULATOR ${ESGD_QEMU})
endif()

# pkg-config (OpenBLAS) must read the target's .pc files only.
set(ENV{PKG_CONFIG_LIBDIR} /usr/lib/${ESGD_CROSS_TRIPLET}/pkgconfig:/usr/share/pkgconfig)
set(ENV{PKG_CONFIG_PATH} "")
