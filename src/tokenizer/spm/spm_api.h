// The C function table of liblococo_spm.so, the one library that links
// libsentencepiece.
//
// Why a separate library loaded with dlmopen into its own link namespace:
// Debian's libsentencepiece embeds and exports its own protobuf (3.14), while
// libtorch loads the system libprotobuf (3.21). In one namespace the two
// interpose each other's symbols and the process aborts or crashes; RTLD_DEEPBIND
// is no cure (it breaks libstdc++'s copy-relocated iostreams). A private
// namespace has its own libstdc++ and libc, so only plain C data crosses the
// boundary, and every buffer the library returns is freed by its `free`.
#pragma once

#include <stddef.h>

extern "C" {

struct lococo_spm_api {
  int version;  // LOCOCO_SPM_API_VERSION
  // All functions returning int give 0 on success; on failure *error holds a
  // message to be released with free_buffer.
  void* (*load)(const char* model_proto, size_t len, char** error);
  void (*release)(void* processor);
  int (*encode)(void* processor, const char* text, size_t len, int** ids, size_t* n, char** error);
  int (*decode)(void* processor, const int* ids, size_t n, char** text, size_t* len, char** error);
  int (*piece_size)(void* processor);
  int (*id_to_piece)(void* processor, int id, char** piece, size_t* len);
  int (*is_control)(void* processor, int id);
  int (*is_byte)(void* processor, int id);
  int (*bos_id)(void* processor);
  int (*eos_id)(void* processor);
  int (*train)(const char* args, const char* const* lines, const size_t* lens, size_t n, char** model_proto,
               size_t* proto_len, char** error);
  void (*free_buffer)(void* buffer);
};

#define LOCOCO_SPM_API_VERSION 2

const lococo_spm_api* lococo_spm_get_api(void);
}
