# Compile one BPF C source with clang (-target bpf, CO-RE against a vmlinux.h
# generated from the running kernel's BTF) and generate its libbpf skeleton.
#
#   metanode_bpf_object(NAME metanode SOURCE metanode.bpf.c INCLUDES dir...)
#
# gives an INTERFACE target NAME_skel whose include path holds NAME.skel.h.
find_program(BPF_CLANG NAMES clang clang-14 REQUIRED)
find_program(BPFTOOL NAMES bpftool PATHS /usr/sbin /sbin REQUIRED)

set(METANODE_BTF_SOURCE /sys/kernel/btf/vmlinux CACHE FILEPATH "Kernel BTF used to generate vmlinux.h")
set(METANODE_VMLINUX_DIR ${CMAKE_BINARY_DIR}/bpf-gen)
set(METANODE_VMLINUX_H ${METANODE_VMLINUX_DIR}/vmlinux.h)

add_custom_command(
  OUTPUT ${METANODE_VMLINUX_H}
  COMMAND ${CMAKE_COMMAND} -E make_directory ${METANODE_VMLINUX_DIR}
  COMMAND sh -c "${BPFTOOL} btf dump file ${METANODE_BTF_SOURCE} format c > ${METANODE_VMLINUX_H}.tmp && mv ${METANODE_VMLINUX_H}.tmp ${METANODE_VMLINUX_H}"
  COMMENT "Generating vmlinux.h from ${METANODE_BTF_SOURCE}"
  VERBATIM)

if(CMAKE_SYSTEM_PROCESSOR MATCHES "x86_64|amd64")
  set(BPF_TARGET_ARCH x86)
elseif(CMAKE_SYSTEM_PROCESSOR MATCHES "aarch64|arm64")
  set(BPF_TARGET_ARCH arm64)
else()
  set(BPF_TARGET_ARCH ${CMAKE_SYSTEM_PROCESSOR})
endif()

function(metanode_bpf_object)
  cmake_parse_arguments(B "" "NAME;SOURCE" "INCLUDES;DEPENDS" ${ARGN})
  set(obj ${METANODE_VMLINUX_DIR}/${B_NAME}.bpf.o)
  set(skel ${METANODE_VMLINUX_DIR}/${B_NAME}.skel.h)
  set(incs)
  foreach(d ${B_INCLUDES})
    list(APPEND incs -I${d})
  endforeach()
  get_filename_component(src ${B_SOURCE} ABSOLUTE)
  add_custom_command(
    OUTPUT ${obj}
    COMMAND ${BPF_CLANG} -target bpf -O2 -g -Wall -Wextra -Werror
            -D__TARGET_ARCH_${BPF_TARGET_ARCH} -I${METANODE_VMLINUX_DIR} ${incs}
            -c ${src} -o ${obj}
    DEPENDS ${src} ${METANODE_VMLINUX_H} ${B_DEPENDS}
    COMMENT "BPF ${B_NAME}.bpf.o"
    VERBATIM)
  add_custom_command(
    OUTPUT ${skel}
    COMMAND sh -c "${BPFTOOL} gen skeleton ${obj} name ${B_NAME}_bpf > ${skel}.tmp && mv ${skel}.tmp ${skel}"
    DEPENDS ${obj}
    COMMENT "Skeleton ${B_NAME}.skel.h"
    VERBATIM)
  add_custom_target(${B_NAME}_skel_gen DEPENDS ${skel})
  add_library(${B_NAME}_skel INTERFACE)
  add_dependencies(${B_NAME}_skel ${B_NAME}_skel_gen)
  target_include_directories(${B_NAME}_skel INTERFACE ${METANODE_VMLINUX_DIR})
endfunction()
